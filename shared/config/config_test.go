package config

import (
	"strings"
	"testing"
	"time"
)

func TestBackends(t *testing.T) {
	bs, err := Backends("redis-a=127.0.0.1:6379, redis-b=[::1]:6380", "redis-b=70")
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || bs[0].Weight != 1 || bs[1].Weight != 70 || bs[1].Addr != "[::1]:6380" {
		t.Fatalf("%+v", bs)
	}
	for _, c := range []struct{ backends, weights, want string }{
		{"", "", "BACKENDS is empty"},
		{"redis-a", "", `BACKENDS item "redis-a"`},
		{"redis-a=localhost", "", "want host:port"},
		{"a=h:1,a=h:2", "", "listed twice"},
		{"a=h:1", "a=x", `WEIGHTS item "a=x"`},
		{"a=h:1", "a=257", "0..256"},
		{"a=h:1", "b=5", `backend "b" is not in BACKENDS`},
	} {
		_, err := Backends(c.backends, c.weights)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Backends(%q, %q) = %v, want error with %q", c.backends, c.weights, err, c.want)
		}
	}
}

func TestLoadNamesTheVariable(t *testing.T) {
	var spec struct {
		Retention time.Duration `envconfig:"RETENTION" default:"5m"`
		Prefetch  int           `envconfig:"PREFETCH" default:"64"`
	}
	t.Setenv("RETENTION", "five minutes")
	err := Load(&spec)
	if err == nil || !strings.Contains(err.Error(), "RETENTION") || !strings.Contains(err.Error(), "five minutes") {
		t.Fatalf("error %v does not name RETENTION and its value", err)
	}
	t.Setenv("RETENTION", "3s")
	if err := Load(&spec); err != nil || spec.Retention != 3*time.Second || spec.Prefetch != 64 {
		t.Fatalf("%v %+v", err, spec)
	}
}
