package app_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/app"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/redisconn/redisconntest"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// Passwords of the private Redis servers below; none may appear in a log.
const (
	aclPass     = "acl-Pa55-7f3e"
	defaultPass = "tls-Pa55-91c2"
	wrongPass   = "wrong-Pa55-0b1d"
)

// Must-show 4: a consumer stores records in a Redis that requires an ACL
// user's password (its own REDIS_USERNAME and REDIS_PASSWORD, the backend
// named by host:port) and in one that speaks only TLS (rediss://:pass@…,
// certificates made here, trusted through REDIS_CA_FILE), and says
// neither password in its logs. A wrong password, and a certificate
// it does not trust, stop it at start with an error naming the backend.
func TestPasswordAndTLSRedis(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	caFile := redisconntest.WriteTLS(t, dir)
	acl := redisconntest.Start(t, dir, "acl", 0,
		"user default off",
		"user consumer on >"+aclPass+" ~* &* +@all",
	)
	tlsPort := redisconntest.Start(t, dir, "tls", 1,
		"requirepass "+defaultPass,
		"tls-cert-file "+filepath.Join(dir, "server.pem"),
		"tls-key-file "+filepath.Join(dir, "server.key"),
		"tls-ca-cert-file "+caFile,
		"tls-auth-clients no",
	)
	aURL := fmt.Sprintf("redis://consumer:%s@127.0.0.1:%d/0", aclPass, acl)
	bURL := fmt.Sprintf("rediss://:%s@127.0.0.1:%d/0", defaultPass, tlsPort)

	var logs lockedBuffer
	cfgFor := func(backends, ca string) app.Config {
		cfg := app.Defaults()
		cfg.AMQPURL, cfg.Backends, cfg.Weights = e.url, backends, "redis-a=50,redis-b=50"
		cfg.RedisPrefix, cfg.Retention, cfg.RedisCAFile = e.layout.Prefix, e.layout.Retention, ca
		cfg.MetricsAddr, cfg.HeartbeatInterval, cfg.ConsumerID = "127.0.0.1:0", 200*time.Millisecond, "auth-"+strconv.Itoa(acl)
		return cfg
	}
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// Refused at start, naming the backend.
	for _, tt := range []struct {
		name, backends, ca, want string
	}{
		{"wrong password", fmt.Sprintf("redis-a=redis://consumer:%s@127.0.0.1:%d/0,redis-b=%s", wrongPass, acl, bURL), caFile,
			`backend "redis-a" at redis://consumer:xxxxx@127.0.0.1:` + strconv.Itoa(acl)},
		{"no password", fmt.Sprintf("redis-a=127.0.0.1:%d,redis-b=%s", acl, bURL), caFile, `backend "redis-a"`},
		{"untrusted certificate", "redis-a=" + aURL + ",redis-b=" + bURL, "", `backend "redis-b" at rediss://:xxxxx@127.0.0.1:` + strconv.Itoa(tlsPort)},
	} {
		_, err := app.New(cfgFor(tt.backends, tt.ca), log)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%s: app.New: %v, want an error with %q", tt.name, err, tt.want)
		}
		if strings.Contains(err.Error(), wrongPass) || strings.Contains(err.Error(), aclPass) || strings.Contains(err.Error(), defaultPass) {
			t.Fatalf("%s: the error shows a password: %v", tt.name, err)
		}
		t.Logf("%s: %v", tt.name, err)
	}

	// The right passwords: records land on both. redis-a is named by
	// host:port alone, and the consumer logs in with its own user
	// (REDIS_USERNAME, REDIS_PASSWORD), so no password is in BACKENDS.
	good := cfgFor(fmt.Sprintf("redis-a=127.0.0.1:%d,redis-b=%s", acl, bURL), caFile)
	good.RedisUsername, good.RedisPassword = "consumer", aclPass
	a, err := app.New(good, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	e.eventually(20*time.Second, "consumer ready", a.Ready)
	const n = 400
	e.publishBinary(recs(n, 9), 50)
	count := func(url string) int {
		o, err := redisconn.Options(url, redisconn.Credentials{CA: mustCA(t, caFile)})
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(o)
		defer rdb.Close()
		got := 0
		if err := e.layout.Read(context.Background(), rdb, e.start.Unix()-2, time.Now().Unix()+2, store.Filter{},
			func(r *record.Record) {
				if r.DstPort == 9 {
					got++
				}
			}); err != nil {
			t.Fatalf("read %s: %v", strings.SplitN(url, ":", 2)[0], err)
		}
		return got
	}
	var onA, onB int
	e.eventually(20*time.Second, "every record stored", func() bool {
		onA, onB = count(aURL), count(bURL)
		return onA+onB >= n
	})
	if onA+onB != n || onA == 0 || onB == 0 {
		t.Fatalf("stored %d on the ACL Redis and %d on the TLS Redis, want %d in all, some on each", onA, onB, n)
	}
	t.Logf("%d records on the ACL-protected Redis, %d on the TLS one", onA, onB)
	cancel()
	<-done
	done <- nil
	for _, p := range []string{aclPass, defaultPass, wrongPass} {
		if strings.Contains(logs.String(), p) {
			t.Fatalf("a password is in the logs:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "xxxxx@127.0.0.1:"+strconv.Itoa(tlsPort)) {
		t.Errorf("the logs never name the backends' redacted addresses:\n%.2000s", logs.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func mustCA(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	ca, err := redisconn.LoadCA(file)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestNamedCredential: add_backend names a credential, not a password.
// The control log holds only the name; each consumer logs in with the
// login its own REDIS_CREDENTIALS gives that name, and stores records
// there. A table naming a credential the consumer lacks is refused with
// the reason, and no password is in its log.
func TestNamedCredential(t *testing.T) {
	const pass = "named-Pa55-3c8"
	e := newEnv(t)
	port := redisconntest.Start(t, t.TempDir(), "named", 26, "user default off", "user pool on >"+pass+" ~* &* +@all")
	e.allow, e.creds = "127.0.0.1:*", "pool-c=pool:"+pass
	c := e.run("cred-1")
	stop := e.traffic(9)
	e.control(fmt.Sprintf(`{"op":"add_backend","backend":{"name":"redis-c","addr":"127.0.0.1:%d","weight":250,"credential":"pool-c"}}`, port))
	e.control(`{"op":"set_weights","weights":{"redis-a":0,"redis-b":0}}`)
	e.eventually(10*time.Second, "the consumer at version 2", func() bool { return c.Routing().Version == 2 })
	time.Sleep(time.Second)
	sent := stop()
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Username: "pool", Password: pass})
	defer rdb.Close()
	e.eventually(20*time.Second, "records on redis-c, stored with the named login", func() bool {
		n := 0
		err := e.layout.Read(context.Background(), rdb, e.start.Unix()-2, time.Now().Unix()+2, store.Filter{}, func(r *record.Record) {
			if r.DstPort == 9 {
				n++
			}
		})
		return err == nil && n > 0 && n+e.countOn(e.addrs[0], 9)+e.countOn(e.addrs[1], 9) >= sent
	})

	cfg := app.Defaults()
	cfg.AMQPURL, cfg.Backends, cfg.BackendAllow = e.url, fmt.Sprintf("redis-c=127.0.0.1:%d", port), "*"
	cfg.MetricsAddr, cfg.RedisPrefix = "127.0.0.1:0", e.layout.Prefix
	cfg.Weights, cfg.RedisCredentials = "", "pool-c=pool" // no password
	if _, err := app.New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "REDIS_CREDENTIALS") {
		t.Errorf("REDIS_CREDENTIALS without a password: %v", err)
	}
}
