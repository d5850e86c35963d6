package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/app"
	"github.com/connpipe/connpipe/services/consumer/internal/brokertest"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// env is one test's slice of the servers: a vhost, two Redis instances
// under a fresh prefix.
type env struct {
	t      testing.TB
	url    string
	addrs  []string
	layout store.Layout
	start  time.Time
	pub    *amqp.Channel
	allow  string // BACKEND_ALLOW of the consumers run; "" the default
	creds  string // REDIS_CREDENTIALS of the consumers run
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, url: testenv.AMQP(t), addrs: testenv.Redis(t, 2),
		layout: store.Layout{Prefix: testenv.Prefix(t), Retention: 2 * time.Minute}, start: time.Now()}
	e.pub = testenv.Channel(t, e.url)
	if err := topology.Declare(e.pub); err != nil {
		t.Fatal(err)
	}
	return e
}

func logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

type running struct {
	*app.App
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// run starts a consumer and waits until it consumes.
func (e *env) run(id string) *running { return e.runWith(id, nil) }

// runWith is run with the configuration changed by edit first.
func (e *env) runWith(id string, edit func(*app.Config)) *running {
	e.t.Helper()
	cfg := app.Defaults()
	cfg.AMQPURL = e.url
	cfg.Backends = "redis-a=" + e.addrs[0] + ",redis-b=" + e.addrs[1]
	cfg.RedisPrefix = e.layout.Prefix
	cfg.Retention = e.layout.Retention
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.ConsumerID = id
	if edit != nil {
		edit(&cfg)
	}
	cfg.BackendAllow = e.allow
	cfg.RedisCredentials = e.creds
	a, err := app.New(cfg, logger(e.t).With("test", e.t.Name()))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{App: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	e.eventually(20*time.Second, "consumer "+id+" ready", func() bool { return a.Ready() })
	return r
}

func (r *running) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("consumer %s: %v", r.ID(), err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("consumer %s did not stop within 20s", r.ID())
		}
	})
}

func (e *env) eventually(d time.Duration, what string, ok func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: no %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var seq int

// recs makes n distinct IPv4 records tagged with dstPort.
func recs(n int, dstPort uint16) []record.Record {
	now := time.Now().UnixNano()
	out := make([]record.Record, n)
	for i := range out {
		seq++
		out[i] = record.Record{TS: now, Src: netip.AddrFrom4([4]byte{10, byte(seq >> 16), byte(seq >> 8), byte(seq)}),
			Dst: netip.MustParseAddr("192.0.2.1"), SrcPort: uint16(seq), DstPort: dstPort, Flags: record.FlagSYN, IPLen: 60}
	}
	return out
}

func (e *env) publish(exchange, key string, p amqp.Publishing) {
	e.t.Helper()
	testenv.Publish(e.t, e.pub, exchange, key, p)
}

// publishBinary publishes records in binary batches of size per.
func (e *env) publishBinary(rs []record.Record, per int) {
	var enc record.Encoder
	for i := 0; i < len(rs); i += per {
		enc.Reset(time.Now().UnixNano())
		for j := i; j < min(i+per, len(rs)); j++ {
			enc.Add(&rs[j])
		}
		e.publish(topology.RecordsExchange, "", amqp.Publishing{ContentType: record.ContentTypeBinary,
			Headers: amqp.Table{record.VersionHeader: int32(record.Version)}, DeliveryMode: amqp.Persistent, Body: enc.Bytes()})
	}
}

func (e *env) publishJSON(contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publish(topology.RecordsExchange, "", amqp.Publishing{ContentType: contentType, Body: body})
}

func (e *env) control(body string) {
	e.publish("", topology.ControlStream, amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: []byte(body)})
}

// stored counts the records with dstPort tag on each backend.
func (e *env) stored(tag uint16) (a, b int) {
	e.t.Helper()
	return e.countOn(e.addrs[0], tag), e.countOn(e.addrs[1], tag)
}

// countOn counts the records tagged tag on the Redis at addr.
func (e *env) countOn(addr string, tag uint16) int {
	e.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	n := 0
	err := e.layout.Read(context.Background(), rdb, e.start.Unix()-2, time.Now().Unix()+2, store.Filter{},
		func(r *record.Record) {
			if r.DstPort == tag {
				n++
			}
		})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitStored waits until n records tagged tag are stored and returns the split.
func (e *env) waitStored(tag uint16, n int) (a, b int) {
	e.t.Helper()
	e.eventually(20*time.Second, fmt.Sprintf("%d records with tag %d stored", n, tag), func() bool {
		a, b = e.stored(tag)
		return a+b >= n
	})
	if a+b != n {
		e.t.Fatalf("tag %d: %d records stored, want %d", tag, a+b, n)
	}
	return a, b
}

// metric reads one sample from a consumer's /metrics, 0 if absent.
func metric(t testing.TB, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

func TestStoresBinaryAndJSONAndDeadLetters(t *testing.T) {
	e := newEnv(t)
	c := e.run("c1")

	// 1000 binary + 10 JSON records: 1010 is 101 cycles of 10, so 30/70 is exact.
	e.publishBinary(recs(1000, 1), 100)
	js := recs(10, 1)
	var arr []record.JSON
	for i := range js[:8] {
		arr = append(arr, record.ToJSON(&js[i]))
	}
	e.publishJSON(record.ContentTypeJSON, arr)
	e.publishJSON(record.ContentTypeJSON, record.ToJSON(&js[8]))
	e.publishJSON("", record.ToJSON(&js[9]))

	// Broken messages in the middle of the stream.
	bad := []struct {
		contentType string
		body        string
		reason      string
	}{
		{record.ContentTypeBinary, "GARBAGE-GARBAGE-GARBAGE", "bad_magic"},
		{record.ContentTypeBinary, "CPRB\x01\x00\x00\x00\x05\x00\x00\x00", "truncated"},
		{record.ContentTypeJSON, `{"ts_ns": 1, "src_ip": "10.0.0.1",`, "bad_json"},
		{record.ContentTypeJSON, `{"ts_ns": 5, "src_ip": "not-an-ip", "dst_ip": "10.0.0.2", "src_port": 1, "dst_port": 2}`, "bad_json"},
		{"text/csv", "1,2,3", "content_type"},
	}
	for _, m := range bad {
		e.publish(topology.RecordsExchange, "", amqp.Publishing{ContentType: m.contentType, Body: []byte(m.body),
			Headers: amqp.Table{"x-test": m.reason}})
	}
	// The consumer keeps going after them.
	e.publishBinary(recs(100, 2), 50)

	if a, b := e.waitStored(1, 1010); a != 303 || b != 707 {
		t.Errorf("1010 records split %d/%d, want 303/707", a, b)
	}
	e.waitStored(2, 100)

	// Every broken message is on conn.records.dead with the reason.
	ch := testenv.Channel(t, e.url)
	var dead []amqp.Delivery
	e.eventually(10*time.Second, "5 dead letters", func() bool {
		d, ok, err := ch.Get(topology.DeadQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			dead = append(dead, d)
		}
		return len(dead) == len(bad)
	})
	for i, d := range dead {
		reason, _ := d.Headers[topology.ErrorHeader].(string)
		if reason == "" {
			t.Errorf("dead letter %d has no %s header: %v", i, topology.ErrorHeader, d.Headers)
		}
		if d.Headers["x-test"] != bad[i].reason || string(d.Body) != bad[i].body || d.ContentType != bad[i].contentType {
			t.Errorf("dead letter %d: headers %v, content type %q, body %q; want the original message %d", i, d.Headers, d.ContentType, d.Body, i)
		}
		t.Logf("dead letter %d: %s", i, reason)
	}
	addr := c.MetricsAddr()
	for reason, want := range map[string]float64{"bad_magic": 1, "truncated": 1, "bad_json": 2, "content_type": 1} {
		if got := metric(t, addr, `connpipe_consumer_messages_dead_lettered_total{reason="`+reason+`"}`); got != want {
			t.Errorf("dead_lettered_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	// 10 + 3 + 2 good messages and 5 dead-lettered ones, all acked.
	e.eventually(5*time.Second, "20 messages acked", func() bool {
		return metric(t, addr, "connpipe_consumer_messages_acked_total") == 20
	})
	if got := metric(t, addr, `connpipe_consumer_records_stored_total{backend="redis-b"}`); got != 707+70 {
		t.Errorf("records_stored_total{backend=redis-b} = %v, want %d", got, 707+70)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s %s", resp.Status, body)
	}
}

// heartbeatDeliveries binds a queue to the heartbeat exchange and returns
// its deliveries, until the test ends.
func (e *env) heartbeatDeliveries() <-chan amqp.Delivery {
	e.t.Helper()
	ch := testenv.Channel(e.t, e.url)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", topology.HeartbeatExchange, false, nil); err != nil {
		e.t.Fatal(err)
	}
	ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

// heartbeats returns the heartbeats that arrive.
func (e *env) heartbeats() <-chan heartbeat.Message {
	e.t.Helper()
	ds := e.heartbeatDeliveries()
	out := make(chan heartbeat.Message, 256)
	go func() {
		for d := range ds {
			var hb heartbeat.Message
			if json.Unmarshal(d.Body, &hb) == nil {
				select {
				case out <- hb:
				default:
				}
			}
		}
		close(out)
	}()
	return out
}

func waitHeartbeat(t *testing.T, hbs <-chan heartbeat.Message, d time.Duration, ok func(heartbeat.Message) bool) heartbeat.Message {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case hb := <-hbs:
			if ok(hb) {
				return hb
			}
		case <-timeout:
			t.Fatalf("no matching heartbeat within %v", d)
		}
	}
}

func TestControlChanges(t *testing.T) {
	e := newEnv(t)
	hbs := e.heartbeats()
	c := e.run("c1")
	addr := c.MetricsAddr()

	hb := waitHeartbeat(t, hbs, 5*time.Second, func(hb heartbeat.Message) bool { return hb.Consumer == "c1" && hb.Ready })
	if hb.Version != 0 || hb.Weights != "redis-a=30 redis-b=70" || hb.Interval != 200 {
		t.Errorf("first heartbeat %+v", hb)
	}
	e.publishBinary(recs(10, 1), 10)
	if a, b := e.waitStored(1, 10); a != 3 || b != 7 {
		t.Fatalf("before the change: %d/%d, want 3/7", a, b)
	}

	e.control(`{"op":"set_weights","weights":{"redis-a":50,"redis-b":50},"id":"t-1","by":"test"}`)
	e.eventually(10*time.Second, "control_version 1", func() bool { return metric(t, addr, "connpipe_consumer_control_version") == 1 })
	hb = waitHeartbeat(t, hbs, 5*time.Second, func(hb heartbeat.Message) bool { return hb.Version == 1 })
	if hb.Weights != "redis-a=50 redis-b=50" {
		t.Errorf("heartbeat after the change: %+v", hb)
	}
	e.publishBinary(recs(100, 2), 7) // 15 messages of 7 or fewer records
	if a, b := e.waitStored(2, 100); a != 50 || b != 50 {
		t.Fatalf("after the change to 50/50: %d/%d", a, b)
	}
	// Heartbeats carry the per-backend totals: 3+50 and 7+50, nothing held.
	hb = waitHeartbeat(t, hbs, 5*time.Second, func(hb heartbeat.Message) bool { return hb.Records == 110 })
	if hb.Stored["redis-a"] != 53 || hb.Stored["redis-b"] != 57 || hb.Unacked != 0 {
		t.Errorf("heartbeat stored %v unacked %d, want redis-a 53, redis-b 57, 0 unacked", hb.Stored, hb.Unacked)
	}

	// Invalid changes: counted, logged, nothing changes.
	for _, m := range []struct{ body, reason string }{
		{`{"op":"set_weights","weights":{"redis-z":10}}`, "unknown_backend"},
		{`{"op":"set_weights","weights":{"redis-a":300}}`, "bad_weight"},
		{`{"op":"set_weights","weights":{"redis-a":`, "malformed"},
		{`{"op":"set_weights","weights":{"redis-a":0,"redis-b":0}}`, "no_capacity"},
		{`{"op":"set_weights","weights":{"redis-a":1},"expect_version":0}`, "stale_version"},
		{`{"op":"drop_everything"}`, "unknown_op"},
	} {
		series := `connpipe_consumer_control_rejected_total{reason="` + m.reason + `"}`
		before := metric(t, addr, series)
		e.control(m.body)
		e.eventually(10*time.Second, series+" to go up", func() bool { return metric(t, addr, series) == before+1 })
	}
	if v := metric(t, addr, "connpipe_consumer_control_version"); v != 1 {
		t.Fatalf("control_version %v after invalid changes, want 1", v)
	}
	if v := metric(t, addr, "connpipe_consumer_control_applied_total"); v != 1 {
		t.Fatalf("control_applied_total %v, want 1", v)
	}
	e.publishBinary(recs(100, 3), 100)
	if a, b := e.waitStored(3, 100); a != 50 || b != 50 {
		t.Fatalf("after the refused changes: %d/%d, want 50/50", a, b)
	}

	// A consumer started after the change routes its first record by it.
	c.stop(t)
	c2 := e.run("c2")
	if v := metric(t, c2.MetricsAddr(), "connpipe_consumer_control_version"); v != 1 {
		t.Fatalf("new consumer at control_version %v, want 1", v)
	}
	e.publishBinary(recs(2, 4), 1)
	if a, b := e.waitStored(4, 2); a != 1 || b != 1 {
		t.Fatalf("new consumer's first two records: %d/%d, want 1/1", a, b)
	}
}

// Shutdown never loses a message: every record is stored, or its message
// is still on the queue.
func TestShutdownStoresWhatIsInHand(t *testing.T) {
	e := newEnv(t)
	c := e.run("c1")
	const per, msgs = 50, 200
	rs := recs(per*msgs, 5)
	var wg sync.WaitGroup
	wg.Go(func() { e.publishBinary(rs, per) })
	e.eventually(20*time.Second, "some records stored", func() bool { a, b := e.stored(5); return a+b > 0 })
	c.stop(t)
	wg.Wait()

	a, b := e.stored(5)
	q, err := e.pub.QueueDeclarePassive(topology.RecordsQueue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("at shutdown: %d records stored, %d messages (of %d records) left on the queue", a+b, q.Messages, per)
	if a+b+q.Messages*per < per*msgs {
		t.Fatalf("lost records: %d stored + %d messages left × %d < %d", a+b, q.Messages, per, per*msgs)
	}
	// A new consumer takes the rest.
	e.run("c2")
	e.waitStored(5, per*msgs)
}

// The broker drops the consumer's connections: it dials again, resumes
// consuming and loses nothing.
func TestReconnects(t *testing.T) {
	e := newEnv(t)
	c := e.run("c1")
	addr := c.MetricsAddr()
	e.publishBinary(recs(100, 6), 10)
	e.waitStored(6, 100)
	if n := metric(t, addr, "connpipe_consumer_control_sessions_total"); n != 1 {
		t.Fatalf("control log sessions %v before any reconnect, want 1", n)
	}

	// The management API lists a connection a few seconds after it opens.
	e.eventually(20*time.Second, "the consumer's connections closed by the broker", func() bool {
		return brokertest.CloseConnections(t, e.url, "consumer c1") >= 2
	})
	e.eventually(20*time.Second, "a reconnect", func() bool {
		return metric(t, addr, "connpipe_consumer_amqp_reconnects_total") >= 1 &&
			metric(t, addr, "connpipe_consumer_amqp_connected") == 1
	})
	// The control log's connection was closed too: a second session.
	e.eventually(20*time.Second, "a second control log session", func() bool {
		return metric(t, addr, "connpipe_consumer_control_sessions_total") >= 2
	})
	e.publishBinary(recs(100, 7), 10)
	e.waitStored(7, 100)

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz after the reconnect: %s", resp.Status)
	}
}

// Without a broker the consumer is not ready: /healthz says why, and it
// still stops cleanly.
func TestHealthzNotReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := app.Defaults()
	cfg.AMQPURL = "amqp://guest:guest@" + dead + "/"
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.ConsumerID = "lonely"
	a, err := app.New(cfg, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var status int
	var body []byte
	for range 50 {
		resp, err := http.Get("http://" + a.MetricsAddr() + "/healthz")
		if err == nil {
			status = resp.StatusCode
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "not ready") {
		t.Errorf("/healthz without a broker: %d %q, want 503 naming the reason", status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("consumer did not stop within 10s")
	}
}

// BenchmarkConsume measures records/s end to end through one consumer:
// binary batches of 1000 records published to conn.records, decoded,
// routed 30/70 and stored on two Redis instances, then acked.
// BenchmarkConsume publishes capture batches (named, 1000 records each)
// and waits until one consumer has stored and acked them, in store layout
// v1 and v2.
func BenchmarkConsume(b *testing.B) {
	for _, layout := range []int{1, 2} {
		b.Run(fmt.Sprintf("layout=v%d", layout), func(b *testing.B) { benchConsume(b, layout) })
	}
}

func benchConsume(b *testing.B, layout int) {
	e := newEnv(b)
	c := e.runWith("bench", func(cfg *app.Config) { cfg.StoreLayout = layout })
	const per, msgs = 1000, 40
	rs := recs(per*msgs, 8)
	var enc record.Encoder
	addr := c.MetricsAddr()
	acked := 0.0
	b.ReportAllocs()
	start := time.Now()
	n, seq := 0, uint64(0)
	for b.Loop() {
		dcs := make([]*amqp.DeferredConfirmation, 0, msgs)
		for i := range msgs {
			seq++
			enc.ResetID(time.Now().UnixNano(), record.ID{Producer: 42, Seq: seq}, (seq-1)*per)
			for j := range per {
				enc.Add(&rs[i*per+j])
			}
			dc, err := e.pub.PublishWithDeferredConfirm(topology.RecordsExchange, "", false, false,
				amqp.Publishing{ContentType: record.ContentTypeBinary, Body: enc.Bytes()})
			if err != nil {
				b.Fatal(err)
			}
			dcs = append(dcs, dc)
		}
		for _, dc := range dcs {
			if !dc.Wait() {
				b.Fatal("nack")
			}
		}
		acked += msgs
		for metric(b, addr, "connpipe_consumer_messages_acked_total") < acked {
			time.Sleep(2 * time.Millisecond)
		}
		n += per * msgs
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
}
