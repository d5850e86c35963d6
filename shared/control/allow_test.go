package control_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/control"
)

func TestCheckAddr(t *testing.T) {
	for _, tt := range []struct {
		addr, host string // host "" : refused
	}{
		{"127.0.0.1:6379", "127.0.0.1"},
		{"redis-a:6379", "redis-a"},
		{"[::1]:6379", "::1"},
		{"redis://127.0.0.1:6379", "127.0.0.1"},
		{"redis://consumer:pw@redis-a:6379/2", "redis-a"},
		{"redis://:pw@redis-a", "redis-a"},
		{"rediss://consumer:pw@[::1]:6380/0", "::1"},
		{"127.0.0.1", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:70000", ""},
		{"http://127.0.0.1:6379", ""},
		{"redis://127.0.0.1:6379/x", ""},
		{"redis://127.0.0.1:6379/0?protocol=2", ""},
		{"redis://:pw@", ""},
		{"user:secret@127.0.0.1:6379", ""},
		{"redis://u:secret@127.0.0.1:99999", ""},
	} {
		h, err := control.AddrHost(tt.addr)
		if tt.host == "" {
			if err == nil || !errors.Is(err, control.ErrBadBackend) {
				t.Errorf("%s: err %v, want ErrBadBackend", tt.addr, err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows the password: %v", tt.addr, err)
			}
			continue
		}
		if err != nil || h != tt.host {
			t.Errorf("%s: host %q err %v, want %q", tt.addr, h, err, tt.host)
		}
	}
}

func TestRedactedTable(t *testing.T) {
	tb := &control.Table{Backends: []control.Backend{{Name: "a", Addr: "redis://u:secret@h:1", Weight: 1}}}
	if d := tb.Describe() + tb.Redacted().Backends[0].Addr; strings.Contains(d, "secret") {
		t.Errorf("Describe/Redacted show the password: %s", d)
	}
	if tb.Backends[0].Addr != "redis://u:secret@h:1" {
		t.Errorf("Redacted changed the table itself")
	}
}

func TestAllow(t *testing.T) {
	initial := []control.Backend{{Name: "redis-a", Addr: "redis-a:6379"}, {Name: "redis-b", Addr: "redis://u:p@10.1.2.3:6380"}}
	b := func(addr string) control.Backend { return control.Backend{Name: "x", Addr: addr, Weight: 1} }
	for _, tt := range []struct {
		allow string
		ok    []string
		no    []string
	}{
		// Empty: exactly the host:port pairs of BACKENDS.
		{"", []string{"redis-a:6379", "REDIS-A:6379", "redis://redis-a", "10.1.2.3:6380", "rediss://10.1.2.3:6380"},
			[]string{"redis-a:1", "redis-a:6380", "10.1.2.3:9", "rediss://10.1.2.3:6379", "redis-c:6379", "10.1.2.4:6379", "127.0.0.1:6379", "redis-a.evil.example:6379"}},
		{"redis-c:6381, 10.0.0.0/8:6379 [fd00::/64]:6390", []string{"redis-c:6381", "10.2.3.4:6379", "redis://10.2.3.4", "[fd00::9]:6390"},
			[]string{"redis-c:6379", "10.2.3.4:6380", "[fd00::9]:6379", "[fd01::9]:6390"}},
		{"127.0.0.1:*, redis-c:*, [::1]:*", []string{"127.0.0.1:1", "127.0.0.1:6398", "redis-c:7", "[::1]:9"}, []string{"127.0.0.2:6379", "redis-d:6379"}},
		{"10.0.0.0/8, redis-c.internal", []string{"10.9.9.9:6379", "redis-c.internal:1", "redis://u:p@redis-c.internal.:6379"},
			[]string{"11.0.0.1:6379", "redis-a:6379", "[::1]:6379", "evil-10.0.0.1.example:6379"}},
		{"::1 127.0.0.1", []string{"[::1]:6379", "127.0.0.1:1", "[::ffff:127.0.0.1]:6379"}, []string{"127.0.0.2:6379", "localhost:6379"}},
		{"*", []string{"anything.example:6379", "1.2.3.4:5"}, nil},
	} {
		a, err := control.ParseAllow(tt.allow, initial)
		if err != nil {
			t.Fatalf("%q: %v", tt.allow, err)
		}
		for _, addr := range tt.ok {
			if err := a.Check(b(addr)); err != nil {
				t.Errorf("BACKEND_ALLOW=%q: %s refused: %v", tt.allow, addr, err)
			}
		}
		for _, addr := range tt.no {
			if err := a.Check(b(addr)); !errors.Is(err, control.ErrNotAllowed) {
				t.Errorf("BACKEND_ALLOW=%q: %s: err %v, want ErrNotAllowed", tt.allow, addr, err)
			}
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "user@host", "host:0", "host:x", "[::1", "[::1]6379", "10.0.0.0/8:70000", ":6379"} {
		if _, err := control.ParseAllow(bad, initial); err == nil {
			t.Errorf("BACKEND_ALLOW=%q: no error", bad)
		}
	}
	a, _ := control.ParseAllow("10.0.0.0/8", nil)
	tb := &control.Table{Version: 3, Backends: []control.Backend{{Name: "a", Addr: "10.0.0.1:1", Weight: 1}, {Name: "evil", Addr: "192.0.2.1:6379", Weight: 99}}}
	f, out := a.Filter(tb)
	if len(f.Backends) != 1 || f.Backends[0].Name != "a" || f.Version != 3 || len(out) != 1 || out[0].Name != "evil" || len(tb.Backends) != 2 {
		t.Errorf("Filter: %+v left out %+v", f, out)
	}
}

// TestCredential: a backend may name a credential, not together with a
// password in its address; HasPassword tells such an address.
func TestCredential(t *testing.T) {
	for _, tt := range []struct {
		b  control.Backend
		ok bool
	}{
		{control.Backend{Name: "c", Addr: "h:1", Weight: 1, Credential: "pool-c"}, true},
		{control.Backend{Name: "c", Addr: "redis://u@h:1", Weight: 1, Credential: "pool-c"}, true},
		{control.Backend{Name: "c", Addr: "redis://u:pw@h:1", Weight: 1, Credential: "pool-c"}, false},
		{control.Backend{Name: "c", Addr: "h:1", Weight: 1, Credential: "a b"}, false},
	} {
		if err := control.CheckBackend(tt.b); (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want ok %v", tt.b, err, tt.ok)
		}
	}
	for addr, want := range map[string]bool{"h:1": false, "redis://u@h:1": false, "redis://u:pw@h:1": true, "rediss://:pw@h": true, "redis://u:%zz@h:1": true} {
		if control.HasPassword(addr) != want {
			t.Errorf("HasPassword(%q) = %v", addr, !want)
		}
	}
}
