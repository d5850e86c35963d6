// Package apptest starts a real admin server for tests: on 127.0.0.1:0,
// against a fresh RabbitMQ virtual host and two real Redis instances under a
// fresh key prefix (package testenv).
package apptest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// Env is a running admin and what it is connected to.
type Env struct {
	Server    *app.Server
	Config    app.Config
	URL       string // http://host:port
	Token     string // ADMIN_TOKEN, for writes (and reads)
	ReadToken string // ADMIN_READ_TOKEN, for reads
	Backends  []control.Backend
	Layout    store.Layout

	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

// Start runs admin until the test ends. edit may change the configuration
// before it starts. It returns once the control log has been read and the
// heartbeat queue is bound.
func Start(t testing.TB, edit func(*app.Config)) *Env {
	t.Helper()
	addrs := testenv.Redis(t, 2)
	cfg := app.Config{
		AMQP:            config.AMQP{AMQPURL: testenv.AMQP(t)},
		HTTPAddr:        "127.0.0.1:0",
		Metrics:         config.Metrics{MetricsAddr: "127.0.0.1:0"},
		Auth:            apitypes.Auth{Token: "tok-" + testenv.ID(), ReadToken: "read-" + testenv.ID()},
		ReadTimeout:     30 * time.Second,
		WriteTimeout:    6 * time.Minute,
		IdleTimeout:     2 * time.Minute,
		Pool:            config.Pool{Backends: "redis-a=" + addrs[0] + ",redis-b=" + addrs[1], Weights: "redis-a=30,redis-b=70"},
		Store:           config.Store{RedisPrefix: testenv.Prefix(t), Retention: 5 * time.Minute},
		ConsumerTimeout: 2 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	initial, err := cfg.Validate()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := app.Listen(cfg, log)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	e := &Env{
		Server: s, Config: cfg, URL: s.URL(), Token: cfg.Token, ReadToken: cfg.ReadToken, Backends: initial.Backends,
		Layout: store.Layout{Prefix: cfg.RedisPrefix, Retention: cfg.Retention},
	}
	t.Cleanup(func() {
		e.mu.Lock()
		if e.conn != nil {
			e.conn.Close()
		}
		e.mu.Unlock()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("admin Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("admin did not stop within 10s")
		}
	})
	for _, w := range []struct {
		what string
		ch   <-chan struct{}
	}{{"control log read", s.Ready()}, {"heartbeat queue bound", s.HeartbeatsBound()}} {
		select {
		case <-w.ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("admin: %s: not within 30s", w.what)
		}
	}
	return e
}

// Heartbeat publishes hb on the heartbeat exchange as a consumer would.
func (e *Env) Heartbeat(t testing.TB, hb heartbeat.Message) {
	t.Helper()
	body, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	e.PublishHeartbeat(t, body)
}

// PublishHeartbeat publishes a raw body on the heartbeat exchange.
func (e *Env) PublishHeartbeat(t testing.TB, body []byte) {
	t.Helper()
	e.Publish(t, topology.HeartbeatExchange, amqp.Publishing{ContentType: "application/json", Body: body, Timestamp: time.Now()})
}

// Control appends body to the control log as an operator would, with any
// AMQP client.
func (e *Env) Control(t testing.TB, body string) {
	t.Helper()
	e.PublishKey(t, "", topology.ControlStream, amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: []byte(body)})
}

// Publish publishes p on exchange in admin's virtual host.
func (e *Env) Publish(t testing.TB, exchange string, p amqp.Publishing) {
	t.Helper()
	e.PublishKey(t, exchange, "", p)
}

// PublishKey publishes p on exchange with routing key key.
func (e *Env) PublishKey(t testing.TB, exchange, key string, p amqp.Publishing) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		conn, err := amqp.Dial(e.Config.AMQPURL)
		if err != nil {
			t.Fatalf("dial rabbitmq: %v", err)
		}
		ch, err := conn.Channel()
		if err != nil {
			conn.Close()
			t.Fatalf("channel: %v", err)
		}
		e.conn, e.ch = conn, ch
	}
	if err := e.ch.PublishWithContext(context.Background(), exchange, key, false, false, p); err != nil {
		t.Fatalf("publish to %s: %v", exchange, err)
	}
}

// WriteRecords stores recs on backend i, in their capture-second buckets,
// and deletes those buckets when the test ends.
func (e *Env) WriteRecords(t testing.TB, i int, recs ...record.Record) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.Backends[i].Addr})
	t.Cleanup(func() { rdb.Close() })
	b := store.NewBuckets()
	from, to := int64(math.MaxInt64), int64(0)
	for j := range recs {
		sec := store.Bucket(recs[j].TS, 0, 0)
		b.Add(sec, &recs[j])
		from, to = min(from, sec), max(to, sec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Layout.Write(ctx, rdb, b); err != nil {
		t.Fatalf("write records to %s: %v", e.Backends[i].Name, err)
	}
	t.Cleanup(func() { _ = e.Layout.Purge(context.Background(), rdb, from, to) })
}

// Answer is an HTTP answer, its body read whole.
type Answer struct {
	Code   int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the JSON body into v.
func (a Answer) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("answer %d %s: %v", a.Code, a.Body, err)
	}
}

// Read GETs path (such as "/api/v1/status") from admin with the read token.
func (e *Env) Read(t testing.TB, path string) Answer {
	t.Helper()
	return Call(t, http.MethodGet, e.URL+path, "", map[string]string{"Authorization": "Bearer " + e.ReadToken})
}

// Call sends a request with body and header to url and reads the answer.
// A body is sent as application/json unless header says otherwise.
func Call(t testing.TB, method, url, body string, header map[string]string) Answer {
	t.Helper()
	return CallWith(t, http.DefaultClient, method, url, body, header)
}

// CallWith is Call through client.
func CallWith(t testing.TB, client *http.Client, method, url, body string, header map[string]string) Answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, url, err)
	}
	return Answer{resp.StatusCode, resp.Header, b}
}
