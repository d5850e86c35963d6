package control

import (
	"strings"
	"testing"
)

func TestParseBackends(t *testing.T) {
	bs, err := ParseBackends("redis-a=127.0.0.1:6379, redis-b=[::1]:6380", "redis-b=70")
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
		_, err := ParseBackends(c.backends, c.weights)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseBackends(%q, %q) = %v, want error with %q", c.backends, c.weights, err, c.want)
		}
	}
}

// TestStartChecksTheAllowList: a starting backend outside BACKEND_ALLOW
// is an error naming BACKENDS; inside, the table and the list come back.
func TestStartChecksTheAllowList(t *testing.T) {
	tb, a, err := Start("a=10.0.0.1:6379,b=10.0.0.2:6379", "b=3", "10.0.0.0/8:6379")
	if err != nil || len(tb.Backends) != 2 || tb.Backends[1].Weight != 3 || a.Check(Backend{Name: "c", Addr: "10.9.9.9:6379"}) != nil {
		t.Fatalf("%v %+v", err, tb)
	}
	if _, _, err := Start("a=10.0.0.1:6379", "", "10.0.0.2:6379"); err == nil || !strings.HasPrefix(err.Error(), "BACKENDS: ") {
		t.Fatalf("backend outside the list: %v", err)
	}
	if _, _, err := Start("a=10.0.0.1:6379", "a=0", ""); err == nil || !strings.HasPrefix(err.Error(), "BACKENDS/WEIGHTS: ") {
		t.Fatalf("no capacity: %v", err)
	}
}
