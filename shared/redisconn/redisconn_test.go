package redisconn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/redisconn/redisconntest"
	"github.com/redis/go-redis/v9"
)

func TestOptions(t *testing.T) {
	for _, tt := range []struct {
		addr          string
		host, user, p string
		db            int
		tls           bool
	}{
		{"127.0.0.1:6379", "127.0.0.1:6379", "", "", 0, false},
		{"redis://u:pw@h:7000/3", "h:7000", "u", "pw", 3, false},
		{"redis://:pw@h", "h:6379", "", "pw", 0, false},
		{"rediss://u:pw@h:6380", "h:6380", "u", "pw", 0, true},
	} {
		o, err := redisconn.Options(tt.addr, redisconn.Credentials{})
		if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		if o.Addr != tt.host || o.Username != tt.user || o.Password != tt.p || o.DB != tt.db || (o.TLSConfig != nil) != tt.tls {
			t.Errorf("%s: %+v", tt.addr, o)
		}
	}
	if _, err := redisconn.Options("redis://u:secret@h:1/x", redisconn.Credentials{}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad URL: %v", err)
	}
	if _, err := redisconn.LoadCA(filepath.Join(t.TempDir(), "none.pem")); err == nil || !strings.Contains(err.Error(), "REDIS_CA_FILE") {
		t.Errorf("missing CA file: %v", err)
	}
	if _, err := redisconn.LoadCredentials("", "consumer", "", nil); err == nil || !strings.Contains(err.Error(), "REDIS_PASSWORD") {
		t.Errorf("user without a password: %v", err)
	}
}

// TestOptionsCredentials: the process's own login serves every address
// that carries no password; one that does keeps its own.
func TestOptionsCredentials(t *testing.T) {
	c := redisconn.Credentials{Username: "consumer", Password: "own"}
	for _, tt := range []struct{ addr, user, pw string }{
		{"127.0.0.1:6379", "consumer", "own"},
		{"redis://h:7000/3", "consumer", "own"},
		{"redis://u:pw@h:7000", "u", "pw"},
		{"redis://:pw@h", "", "pw"},
	} {
		o, err := redisconn.Options(tt.addr, c)
		if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		if o.Username != tt.user || o.Password != tt.pw {
			t.Errorf("%s: user %q password %q, want %q %q", tt.addr, o.Username, o.Password, tt.user, tt.pw)
		}
	}

	// Against a server without anonymous access: the process's login
	// opens a plain host:port backend, another password is refused.
	port := redisconntest.Start(t, t.TempDir(), "acl", 24, "user default off", "user consumer on >own ~cp:* +@all")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for _, tt := range []struct {
		c  redisconn.Credentials
		ok bool
	}{{c, true}, {redisconn.Credentials{Username: "consumer", Password: "other"}, false}, {redisconn.Credentials{}, false}} {
		o, err := redisconn.Options(addr, tt.c)
		if err != nil {
			t.Fatal(err)
		}
		o.MaxRetries = -1
		rdb := redis.NewClient(o)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = rdb.Set(ctx, "cp:x", "1", time.Second).Err()
		cancel()
		rdb.Close()
		if (err == nil) != tt.ok || (err != nil && !redisconn.IsConfigError(err)) {
			t.Errorf("SET as %q: %v, want ok %v or a configuration error", tt.c.Username, err, tt.ok)
		}
	}
}

// TestIsConfigError: a refused login and an untrusted certificate are
// configuration errors; an instance that is down is not.
func TestIsConfigError(t *testing.T) {
	dir := t.TempDir()
	ca := redisconntest.WriteTLS(t, dir)
	pw := redisconntest.Start(t, dir, "pw", 20, "requirepass right")
	tp := redisconntest.Start(t, dir, "tls", 22, "tls-cert-file "+filepath.Join(dir, "server.pem"),
		"tls-key-file "+filepath.Join(dir, "server.key"), "tls-ca-cert-file "+ca, "tls-auth-clients no")
	pool, err := redisconn.LoadCA(ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr   string
		trust  bool
		config bool // want a configuration error; false: want no error, or one that is not
		ok     bool
	}{
		{fmt.Sprintf("redis://:right@127.0.0.1:%d", pw), false, false, true},
		{fmt.Sprintf("redis://:wrong@127.0.0.1:%d", pw), false, true, false},
		{fmt.Sprintf("127.0.0.1:%d", pw), false, true, false},
		{fmt.Sprintf("rediss://127.0.0.1:%d", tp), true, false, true},
		{fmt.Sprintf("rediss://127.0.0.1:%d", tp), false, true, false},
		{"127.0.0.1:1", false, false, false},
	} {
		var ca = pool
		if !tt.trust {
			ca = nil
		}
		o, err := redisconn.Options(tt.addr, redisconn.Credentials{CA: ca})
		if err != nil {
			t.Fatal(err)
		}
		o.MaxRetries, o.DialTimeout = -1, 2*time.Second
		rdb := redis.NewClient(o)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = rdb.Ping(ctx).Err()
		cancel()
		rdb.Close()
		if (err == nil) != tt.ok || redisconn.IsConfigError(err) != tt.config {
			t.Errorf("%s (trusted CA %v): PING %v, config error %v; want ok %v, config error %v", tt.addr, tt.trust, err, redisconn.IsConfigError(err), tt.ok, tt.config)
		}
	}
	if redisconn.IsConfigError(errors.New("dial tcp: connection refused")) {
		t.Error("connection refused is a configuration error")
	}
}

// TestOwnLoginStaysHome: the process's login goes to the addresses it was
// started with and nowhere else, even an allowed port on the same host; a
// listener there reads no password off the wire.
func TestOwnLoginStaysHome(t *testing.T) {
	const secret = "own-Pa55-71c"
	spy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := spy.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		got <- b[:n]
	}()
	home := []control.Backend{{Name: "redis-a", Addr: "127.0.0.1:6389"}, {Name: "redis-t", Addr: "rediss://10.0.0.9:6380"}}
	c, err := redisconn.LoadCredentials("", "consumer", secret, home)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:6389": true, "redis://127.0.0.1:6389/2": true, "rediss://10.0.0.9:6380": true,
		"redis://10.0.0.9:6380": false, "127.0.0.1:6390": false, spy.Addr().String(): false,
	} {
		o, err := redisconn.Options(addr, c)
		if err != nil {
			t.Fatal(err)
		}
		if (o.Password == secret) != want {
			t.Errorf("%s: password sent %v, want %v", addr, o.Password == secret, want)
		}
	}
	o, _ := redisconn.Options(spy.Addr().String(), c)
	o.MaxRetries, o.ReadTimeout = -1, 500*time.Millisecond
	rdb := redis.NewClient(o)
	defer rdb.Close()
	_ = rdb.Ping(context.Background()).Err()
	b := <-got
	if len(b) == 0 {
		t.Fatal("the client sent nothing: the test would not see a password")
	}
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "consumer") {
		t.Errorf("the listener read the login: %q", b)
	}
}

// TestNamedLogins: REDIS_CREDENTIALS parses into named logins, a backend
// naming one logs in with it, and one naming none this process has is an
// error that shows no password.
func TestNamedLogins(t *testing.T) {
	named, err := redisconn.ParseNamed("pool-c=consumer:pw:with:colons, def=:pw2")
	if err != nil || named["pool-c"] != (redisconn.Login{Username: "consumer", Password: "pw:with:colons"}) || named["def"].Password != "pw2" {
		t.Fatalf("%+v %v", named, err)
	}
	for _, bad := range []string{"pool-c=consumer", "pool-c=consumer:", "=u:p", "a=u:p,a=u:q"} {
		if _, err := redisconn.ParseNamed(bad); err == nil || strings.Contains(err.Error(), "p,") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	c := redisconn.Credentials{Username: "own", Password: "own-pw", Named: named}
	o, err := redisconn.OptionsFor(control.Backend{Name: "c", Addr: "127.0.0.1:1", Credential: "pool-c"}, c)
	if err != nil || o.Username != "consumer" || o.Password != "pw:with:colons" {
		t.Fatalf("options %+v %v", o, err)
	}
	if _, err := redisconn.OptionsFor(control.Backend{Name: "c", Addr: "127.0.0.1:1", Credential: "other"}, c); !errors.Is(err, redisconn.ErrUnknownCredential) {
		t.Fatalf("unknown credential: %v", err)
	}
}
