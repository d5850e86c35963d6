// Package testenv gives integration tests isolated slices of the real
// RabbitMQ and Redis servers that scripts/testenv.sh starts: a fresh
// RabbitMQ virtual host per test and a fresh Redis key prefix per test, so
// tests of different packages can run at the same time on one broker.
//
// Addresses come from the env file that testenv.sh writes
// ($CONNPIPE_TESTENV_DIR/env, by default /tmp/connpipe-testenv/env), each
// overridable by the environment:
//
//	CONNPIPE_TEST_AMQP    amqp://connpipe-test:PASSWORD@127.0.0.1:5682/
//	CONNPIPE_TEST_MGMT    http://connpipe-test:PASSWORD@127.0.0.1:15682
//	CONNPIPE_TEST_REDIS   127.0.0.1:6389,127.0.0.1:6390,127.0.0.1:6391
//	CONNPIPE_TEST_MARKER  the value testenv.sh stored in each Redis
//
// A test uses only servers that testenv.sh started: the broker must accept
// the env file's credentials, and each Redis must hold the marker. A server
// that does not answer, or answers without the marker (the compose stack's,
// say), fails the test with a message that says how to start the right
// ones; nothing is skipped.
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const hint = "start the test servers with `make testenv` (scripts/testenv.sh up)"

var (
	fileOnce sync.Once
	fileVars map[string]string
	fileErr  error
)

// EnvFile is where scripts/testenv.sh writes the test servers' addresses.
func EnvFile() string {
	dir := os.Getenv("CONNPIPE_TESTENV_DIR")
	if dir == "" {
		dir = "/tmp/connpipe-testenv"
	}
	return filepath.Join(dir, "env")
}

func readEnvFile() (map[string]string, error) {
	f, err := os.Open(EnvFile())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && strings.HasPrefix(k, "CONNPIPE_TEST_") {
			vars[k] = v
		}
	}
	return vars, sc.Err()
}

// setting returns name from the environment, else from testenv.sh's env
// file, failing the test when neither has it.
func setting(t testing.TB, name string) string {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		return v
	}
	fileOnce.Do(func() { fileVars, fileErr = readEnvFile() })
	if fileErr != nil {
		t.Fatalf("%s is not set and the test servers' env file cannot be read (%v); %s", name, fileErr, hint)
	}
	v, ok := fileVars[name]
	if !ok || v == "" {
		t.Fatalf("%s is not set and %s does not name it; %s", name, EnvFile(), hint)
	}
	return v
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
	base, err := url.Parse(setting(t, "CONNPIPE_TEST_AMQP"))
	if err != nil {
		t.Fatalf("CONNPIPE_TEST_AMQP: %v", err)
	}
	name := "t-" + strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	name += "-" + ID()
	vh := url.PathEscape(name)
	if err := mgmtCall(t, http.MethodPut, "/api/vhosts/"+vh, ""); err != nil {
		t.Fatalf("rabbitmq management API: %v; %s", err, hint)
	}
	if err := mgmtCall(t, http.MethodPut, "/api/permissions/"+vh+"/"+url.PathEscape(base.User.Username()),
		`{"configure":".*","write":".*","read":".*"}`); err != nil {
		t.Fatalf("grant permissions on vhost %s: %v", name, err)
	}
	t.Cleanup(func() { _ = mgmtCall(t, http.MethodDelete, "/api/vhosts/"+vh, "") })
	u := *base
	u.Path = "/" + name
	u.RawPath = "/" + vh
	return u.String()
}

// mgmtCall sends one request to the management API with testenv's
// credentials.
func mgmtCall(t testing.TB, method, path, body string) error {
	return ManagementCall(setting(t, "CONNPIPE_TEST_MGMT"), method, path, body)
}

// ManagementCall sends one request to the RabbitMQ management API at
// mgmtURL, with the credentials in its user info, and fails on an answer
// of 300 or above.
func ManagementCall(mgmtURL, method, path, body string) error {
	mgmt, err := url.Parse(mgmtURL)
	if err != nil {
		return fmt.Errorf("management URL: %w", err)
	}
	user := mgmt.User.Username()
	pass, _ := mgmt.User.Password()
	mgmt.User = nil
	req, err := http.NewRequest(method, strings.TrimRight(mgmt.String(), "/")+path, strings.NewReader(body))
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

// User creates a broker user for this test with the given permission
// patterns (configure, write, read) on amqpURL's virtual host, and returns
// amqpURL with that user's credentials. The user is deleted when the test
// ends.
func User(t testing.TB, amqpURL, role, configure, write, read string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	name := "t-" + role + "-" + ID()
	pass := ID() + ID()
	if err := mgmtCall(t, http.MethodPut, "/api/users/"+url.PathEscape(name), fmt.Sprintf(`{"password":%q,"tags":""}`, pass)); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	t.Cleanup(func() { _ = mgmtCall(t, http.MethodDelete, "/api/users/"+url.PathEscape(name), "") })
	vh := url.PathEscape(strings.TrimPrefix(u.Path, "/"))
	perms, _ := json.Marshal(map[string]string{"configure": configure, "write": write, "read": read})
	if err := mgmtCall(t, http.MethodPut, "/api/permissions/"+vh+"/"+url.PathEscape(name), string(perms)); err != nil {
		t.Fatalf("set permissions of %s: %v", name, err)
	}
	u.User = url.UserPassword(name, pass)
	return u.String()
}

// Policy sets a queue policy on amqpURL's virtual host (the test's own),
// as rabbitmqctl set_policy --apply-to queues would.
func Policy(t testing.TB, amqpURL, name, pattern, definition string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	vh := url.PathEscape(strings.TrimPrefix(u.Path, "/"))
	body := fmt.Sprintf(`{"pattern":%q,"definition":%s,"apply-to":"queues","priority":10}`, pattern, definition)
	if err := mgmtCall(t, http.MethodPut, "/api/policies/"+vh+"/"+url.PathEscape(name), body); err != nil {
		t.Fatalf("set policy %s: %v", name, err)
	}
}

// Management returns the management API base URL (with credentials).
func Management(t testing.TB) string {
	t.Helper()
	return setting(t, "CONNPIPE_TEST_MGMT")
}

// Redis returns the addresses of n Redis servers, failing the test if
// fewer are configured, or any does not answer or lacks testenv's marker.
func Redis(t testing.TB, n int) []string {
	t.Helper()
	all := strings.Split(setting(t, "CONNPIPE_TEST_REDIS"), ",")
	if len(all) < n {
		t.Fatalf("test needs %d Redis servers, CONNPIPE_TEST_REDIS names %d", n, len(all))
	}
	marker := setting(t, "CONNPIPE_TEST_MARKER")
	for _, a := range all[:n] {
		if err := checkMarker(a, marker); err != nil {
			t.Fatalf("redis at %s: %v; %s", a, err, hint)
		}
	}
	return all[:n]
}

// checkMarker asks the Redis at addr for the key testenv.sh set in every
// server it started, so a test never writes into somebody else's Redis.
func checkMarker(addr, marker string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	const key = "connpipe-testenv-marker"
	if _, err := fmt.Fprintf(c, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	want := fmt.Sprintf("$%d\r\n", len(marker))
	if head != want {
		return fmt.Errorf("answers, but is not a server that testenv.sh started (no marker: %q)", strings.TrimSpace(head))
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSuffix(got, "\r\n") != marker {
		return fmt.Errorf("answers, but holds another run's marker")
	}
	return nil
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
