package app_test

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/app"
)

// Must-show 2 of "who may do what": an operator publishes add_backend to
// an address outside BACKEND_ALLOW, where the test listens as an
// attacker's Redis would: another host (127.0.0.2), or another port of a
// host of BACKENDS (127.0.0.1, whose Redis servers are at other ports; the
// default list is their host:port pairs). Every consumer folds the change
// like any reader (the log's version moves on) but refuses to connect: the
// refusal is counted, the table it routes by keeps its backends and
// weights, no connection reaches the attacker's port (so it never sees a
// HELLO with the consumer's login) and every record lands on the allowed
// instances.
func TestAddBackendOutsideAllowRefused(t *testing.T) {
	for _, listen := range []string{"127.0.0.2:0", "127.0.0.1:0"} {
		t.Run(listen, func(t *testing.T) { addBackendOutsideAllow(t, listen) })
	}
}

func addBackendOutsideAllow(t *testing.T, listen string) {
	e := newEnv(t)
	evil, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("listen on %s (outside BACKEND_ALLOW): %v", listen, err)
	}
	defer evil.Close()
	var dialled atomic.Int64
	go func() {
		for {
			c, err := evil.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()

	cs := []*running{e.run("c1"), e.run("c2")}
	before := cs[0].Routing().Describe()
	stop := e.traffic(7)
	e.control(fmt.Sprintf(`{"op":"add_backend","backend":{"name":"evil","addr":"redis://x:y@%s","weight":250},"id":"t-evil","by":"operator"}`, evil.Addr()))
	const refused = `connpipe_consumer_control_rejected_total{reason="backend_not_allowed"}`
	e.eventually(10*time.Second, "every consumer at version 1, the change refused", func() bool {
		for _, c := range cs {
			if metric(t, c.MetricsAddr(), "connpipe_consumer_control_version") != 1 || metric(t, c.MetricsAddr(), refused) != 1 {
				return false
			}
		}
		return true
	})
	// Records keep flowing for a while after the change.
	time.Sleep(time.Second)
	sent := stop()
	for _, c := range cs {
		r := c.Routing()
		got := strings.TrimPrefix(r.Describe(), "v1")
		if want := strings.TrimPrefix(before, "v0"); got != want || r.Version != 1 {
			t.Errorf("consumer %s routes by %s, want %s at version 1", c.ID(), r.Describe(), want)
		}
		if strings.Contains(r.Describe(), "evil") {
			t.Errorf("consumer %s routes to evil: %s", c.ID(), r.Describe())
		}
		if n := metric(t, c.MetricsAddr(), "connpipe_consumer_backends_not_allowed"); n != 1 {
			t.Errorf("consumer %s: backends_not_allowed %v, want 1", c.ID(), n)
		}
		if n := metric(t, c.MetricsAddr(), "connpipe_consumer_control_applied_total"); n != 0 {
			t.Errorf("consumer %s counts the refused change as applied (%v)", c.ID(), n)
		}
	}
	e.eventually(20*time.Second, "every record stored on redis-a and redis-b", func() bool {
		a, b := e.stored(7)
		return a+b >= sent
	})
	if a, b := e.stored(7); a+b != sent {
		t.Errorf("%d records stored, %d published", a+b, sent)
	}
	if n := dialled.Load(); n != 0 {
		t.Fatalf("the host outside BACKEND_ALLOW was dialled %d times", n)
	}
}

// A starting backend outside BACKEND_ALLOW is a configuration error that
// names it; an empty BACKEND_ALLOW allows the hosts of BACKENDS.
func TestBackendAllowConfig(t *testing.T) {
	for _, tt := range []struct {
		backends, allow, want string
	}{
		{"redis-a=127.0.0.1:6379,redis-b=redis-b:6379", "", ""},
		{"redis-a=127.0.0.1:6379", "10.0.0.0/8", `backend "redis-a" at 127.0.0.1:6379: backend address not in BACKEND_ALLOW`},
		{"redis-a=redis://u:secret@10.0.0.1:6379", "10.0.0.0/8", ""},
		{"redis-a=redis://u:secret@10.0.0.1:6379", "redis-a", `backend "redis-a" at redis://u:xxxxx@10.0.0.1:6379`},
		{"redis-a=127.0.0.1:6379", "10.0.0.0/99", "BACKEND_ALLOW entry"},
		{"redis-a=127.0.0.1:6379", "*", ""},
	} {
		c := app.Defaults()
		c.Backends, c.Weights, c.BackendAllow = tt.backends, "", tt.allow
		err := c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("BACKENDS=%s BACKEND_ALLOW=%s: %v, want %q", tt.backends, tt.allow, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
