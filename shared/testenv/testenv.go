// Package testenv gives integration tests isolated slices of the real
// RabbitMQ and Redis servers that scripts/testenv.sh starts: a fresh
// RabbitMQ virtual host per test and a fresh Redis key prefix per test, so
// tests of different packages can run at the same time on one broker.
//
// Addresses come from the environment, with the defaults of testenv.sh:
//
//	CONNPIPE_TEST_AMQP   amqp://guest:guest@127.0.0.1:5672/
//	CONNPIPE_TEST_MGMT   http://guest:guest@127.0.0.1:15672
//	CONNPIPE_TEST_REDIS  127.0.0.1:6379,127.0.0.1:6380,127.0.0.1:6381
//
// A server that does not answer fails the test with a message that says
// how to start it; nothing is skipped.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const hint = "start the test servers with `scripts/testenv.sh up` (or `make testenv`)"

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// ID returns a short random id, safe in vhost names and Redis keys.
func ID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// AMQP creates a virtual host for this test and returns an AMQP URL for it.
// The virtual host is deleted when the test ends.
func AMQP(t testing.TB) string {
	t.Helper()
	base, err := url.Parse(env("CONNPIPE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/"))
	if err != nil {
		t.Fatalf("CONNPIPE_TEST_AMQP: %v", err)
	}
	mgmt, err := url.Parse(env("CONNPIPE_TEST_MGMT", "http://guest:guest@127.0.0.1:15672"))
	if err != nil {
		t.Fatalf("CONNPIPE_TEST_MGMT: %v", err)
	}
	name := "t-" + strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	name += "-" + ID()
	user := mgmt.User.Username()
	pass, _ := mgmt.User.Password()
	call := func(method, path, body string) error {
		u := *mgmt
		u.User = nil
		req, err := http.NewRequest(method, strings.TrimRight(u.String(), "/")+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth(user, pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		return nil
	}
	vh := url.PathEscape(name)
	if err := call(http.MethodPut, "/api/vhosts/"+vh, ""); err != nil {
		t.Fatalf("rabbitmq management API at %s: %v; %s", mgmt.Host, err, hint)
	}
	if err := call(http.MethodPut, "/api/permissions/"+vh+"/"+url.PathEscape(base.User.Username()),
		`{"configure":".*","write":".*","read":".*"}`); err != nil {
		t.Fatalf("grant permissions on vhost %s: %v", name, err)
	}
	t.Cleanup(func() { _ = call(http.MethodDelete, "/api/vhosts/"+vh, "") })
	u := *base
	u.Path = "/" + name
	u.RawPath = "/" + vh
	return u.String()
}

// Management returns the management API base URL (with credentials).
func Management() string {
	return env("CONNPIPE_TEST_MGMT", "http://guest:guest@127.0.0.1:15672")
}

// Redis returns the addresses of n Redis servers, failing the test if
// fewer are configured or any does not answer.
func Redis(t testing.TB, n int) []string {
	t.Helper()
	all := strings.Split(env("CONNPIPE_TEST_REDIS", "127.0.0.1:6379,127.0.0.1:6380,127.0.0.1:6381"), ",")
	if len(all) < n {
		t.Fatalf("test needs %d Redis servers, CONNPIPE_TEST_REDIS names %d", n, len(all))
	}
	for _, a := range all[:n] {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			t.Fatalf("redis at %s: %v; %s", a, err, hint)
		}
		c.Close()
	}
	return all[:n]
}

// Prefix returns a Redis key prefix unique to this test, ending in ':'.
func Prefix(t testing.TB) string {
	return "cpt:" + ID() + ":"
}

// Context returns a context cancelled when the test ends or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Channel dials the broker at url and returns a channel in confirm mode;
// the connection is closed when the test ends.
func Channel(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial rabbitmq: %v; %s", err, hint)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	return ch
}

// Publish publishes p on ch (a Channel) and fails the test unless the
// broker confirms it.
func Publish(t testing.TB, ch *amqp.Channel, exchange, key string, p amqp.Publishing) {
	t.Helper()
	dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, p)
	if err != nil {
		t.Fatalf("publish to exchange %q key %q: %v", exchange, key, err)
	}
	if !dc.Wait() {
		t.Fatalf("publish to exchange %q key %q: broker nacked it", exchange, key)
	}
}
