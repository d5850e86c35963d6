package config

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Level string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

type spec struct {
	URL     string        `envconfig:"AMQP_URL" default:"amqp://127.0.0.1:5672/" desc:"the broker"`
	Wait    time.Duration `envconfig:"WAIT" default:"1s" desc:"a very long explanation that goes on and on well past the width of one line of a terminal, so it wraps"`
	NoDesc  int           `envconfig:"NO_DESC"`
	private int
	inner
}

func TestVarsAndUsageComeFromTheTags(t *testing.T) {
	vs := Vars(&spec{})
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	if got := strings.Join(names, " "); got != "AMQP_URL WAIT NO_DESC LOG_LEVEL" {
		t.Fatalf("Vars = %s", got)
	}
	var b bytes.Buffer
	WriteUsage(&b, spec{})
	out := b.String()
	for _, want := range []string{
		"  AMQP_URL   default amqp://127.0.0.1:5672/. the broker\n",
		"  NO_DESC    default \"\"\n",
		"  LOG_LEVEL  default info. debug, info, warn or error\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if len(l) > 80 {
			t.Errorf("line longer than 80: %q", l)
		}
	}
}
