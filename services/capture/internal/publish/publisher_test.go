package publish

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tw struct{ t *testing.T }

func (w tw) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// publishN sends n records through a batcher and a publisher, calling
// during(i) after each Add, and waits for every batch to be confirmed. The
// publisher logs to log, or to the test's log when it is nil.
func publishN(t *testing.T, amqpURL, name string, log *slog.Logger, n, batch, inFlight int, during func(i int)) *Metrics {
	t.Helper()
	if log == nil {
		log = testLogger(t)
	}
	ctx := testenv.Context(t, 60*time.Second)
	m := NewMetrics(prometheus.NewRegistry())
	b := NewBatcher(ctx, batch, 20*time.Millisecond)
	p := NewPublisher(PublisherConfig{URL: amqpURL, Name: name, MaxInFlight: inFlight, Logger: log, Metrics: m})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, b.Out()) }()
	for i := range n {
		if err := b.Add(ctx, rec(i)); err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
		if during != nil {
			during(i)
		}
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p.Connected() {
		t.Fatal("still connected after Run returned")
	}
	return m
}

// drain reads every message of conn.records and returns the records by
// source port, with how often each arrived.
func drain(t *testing.T, amqpURL string, n int) map[uint16]int {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	seen := map[uint16]int{}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		d, ok, err := ch.Get(topology.RecordsQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if d.ContentType != record.ContentTypeBinary || d.DeliveryMode != amqp.Persistent {
			t.Fatalf("message content type %q delivery mode %d", d.ContentType, d.DeliveryMode)
		}
		if v, _ := d.Headers[record.VersionHeader].(int32); v != record.Version {
			t.Fatalf("version header %#v", d.Headers[record.VersionHeader])
		}
		var bt record.Batch
		if err := record.DecodeBinary(d.Body, &bt); err != nil {
			t.Fatal(err)
		}
		if bt.Ingest <= 0 || time.Since(time.Unix(0, bt.Ingest)) > time.Minute {
			t.Fatalf("batch ingest %d is not the batch's wall-clock start", bt.Ingest)
		}
		for _, r := range bt.Records {
			if want := rec(int(r.SrcPort)); r != *want {
				t.Fatalf("record %v, want %v", r, want)
			}
			seen[r.SrcPort]++
		}
	}
	return seen
}

// TestPublisherDeliversAll: N records through the real publisher all reach
// the conn.records queue, and the confirmed counter says N.
func TestPublisherDeliversAll(t *testing.T) {
	u := testenv.AMQP(t)
	const n = 5000
	m := publishN(t, u, "capture-test-all", nil, n, 128, 4, nil)
	seen := drain(t, u, n)
	if len(seen) != n {
		t.Fatalf("%d of %d records in the queue", len(seen), n)
	}
	for port, c := range seen {
		if c != 1 {
			t.Fatalf("record %d arrived %d times without any failure", port, c)
		}
	}
	if got := testutil.ToFloat64(m.Confirmed); got != n {
		t.Fatalf("records_confirmed_total %v, want %d", got, n)
	}
	if got := testutil.ToFloat64(m.Published); got != n {
		t.Fatalf("records_published_total %v, want %d", got, n)
	}
	if got := testutil.ToFloat64(m.InFlight); got != 0 {
		t.Fatalf("in_flight %v after the drain", got)
	}
}

// TestPublisherSurvivesConnectionLoss closes the publisher's connection
// from the broker side (management API) while it publishes: it reconnects,
// republishes what was unconfirmed, and every record arrives.
func TestPublisherSurvivesConnectionLoss(t *testing.T) {
	u := testenv.AMQP(t)
	name := "capture-test-kill-" + testenv.ID()
	ctx := testenv.Context(t, 90*time.Second)
	m := NewMetrics(prometheus.NewRegistry())
	b := NewBatcher(ctx, 20, 20*time.Millisecond)
	p := NewPublisher(PublisherConfig{URL: u, Name: name, MaxInFlight: 8, Logger: testLogger(t), Metrics: m})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, b.Out()) }()
	// Publish slowly until the management API lists the connection, then
	// flat out (a full window in flight) while it is closed, and for 100
	// batches after.
	var killed, burst atomic.Bool
	killDone := make(chan struct{})
	go func() {
		defer close(killDone)
		conn := findConnection(t, u, name)
		if conn == "" {
			return
		}
		burst.Store(true)
		time.Sleep(20 * time.Millisecond)
		killed.Store(closeConnection(t, conn))
	}()
	n, after := 0, 0
	for after < 100*20 {
		if err := b.Add(ctx, rec(n)); err != nil {
			t.Fatal(err)
		}
		n++
		if n%20 == 0 && !burst.Load() {
			time.Sleep(2 * time.Millisecond)
		}
		select {
		case <-killDone:
			if !killed.Load() {
				t.Fatal("the connection was not closed: the test proves nothing")
			}
			after++
		default:
		}
		if n >= 1<<16 {
			t.Fatal("the management API never listed the connection")
		}
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	seen := drain(t, u, n)
	if len(seen) != n {
		t.Fatalf("%d of %d records in the queue after a forced disconnect", len(seen), n)
	}
	if got := testutil.ToFloat64(m.Confirmed); got != float64(n) {
		t.Fatalf("records_confirmed_total %v, want %d", got, n)
	}
	if testutil.ToFloat64(m.Republished) == 0 {
		t.Fatal("nothing was republished: the disconnect did not catch batches in flight")
	}
	if st := p.Broker(); st.Sessions != 2 {
		t.Errorf("broker session %+v, want a second after the disconnect", st)
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("%d records, %v batches republished, %d duplicate records delivered", n, testutil.ToFloat64(m.Republished), dups)
}

// overflowQueue declares the topology and binds to the records exchange a
// second queue, "overflow", that holds at most max messages and rejects
// publishes beyond them, so the broker nacks. It returns the channel that
// declared it, to purge it with.
func overflowQueue(t *testing.T, amqpURL string, max int) *amqp.Channel {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("overflow", false, false, false, false, amqp.Table{
		"x-max-length": max, "x-overflow": "reject-publish",
	}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("overflow", "", topology.RecordsExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestPublisherRepublishesNacked binds a second queue that rejects
// publishes when full (x-overflow reject-publish), so the broker nacks;
// each nacked batch is published again until confirmed.
func TestPublisherRepublishesNacked(t *testing.T) {
	u := testenv.AMQP(t)
	ch := overflowQueue(t, u, 10)
	// Empty the overflow queue now and then, so republished batches get in.
	stop := make(chan struct{})
	purged := make(chan struct{})
	go func() {
		defer close(purged)
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				_, _ = ch.QueuePurge("overflow", false)
			}
		}
	}()
	const n = 1000
	m := publishN(t, u, "capture-test-nack", nil, n, 20, 8, nil)
	close(stop)
	<-purged
	if testutil.ToFloat64(m.Nacked) == 0 || testutil.ToFloat64(m.Republished) == 0 {
		t.Fatalf("nacked %v republished %v: the broker never nacked, the test proves nothing",
			testutil.ToFloat64(m.Nacked), testutil.ToFloat64(m.Republished))
	}
	seen := drain(t, u, n)
	if len(seen) != n {
		t.Fatalf("%d of %d records in the queue", len(seen), n)
	}
	if got := testutil.ToFloat64(m.Confirmed); got != n {
		t.Fatalf("records_confirmed_total %v, want %d", got, n)
	}
	t.Logf("%v batches nacked and republished", testutil.ToFloat64(m.Nacked))
}

// TestPublisherRenewsNackingChannel: while the broker nacks every publish
// for longer than renewAfterNacks (a full queue that rejects publishes), the
// publisher opens another connection; once publishes are taken again every
// record is delivered.
func TestPublisherRenewsNackingChannel(t *testing.T) {
	u := testenv.AMQP(t)
	ch := overflowQueue(t, u, 1)
	// The queue fills with the first batch and stays full a while, then
	// is emptied now and then.
	stop := make(chan struct{})
	purged := make(chan struct{})
	go func() {
		defer close(purged)
		wait := renewAfterNacks + 3*time.Second
		for {
			select {
			case <-stop:
				return
			case <-time.After(wait):
				_, _ = ch.QueuePurge("overflow", false)
				wait = 30 * time.Millisecond
			}
		}
	}()
	var logs testenv.Buffer
	const n = 200
	m := publishN(t, u, "capture-test-renew", slog.New(slog.NewTextHandler(&logs, nil)), n, 20, 4, nil)
	close(stop)
	<-purged
	renewed := strings.Count(logs.String(), "every publish nacked for")
	if renewed == 0 {
		t.Fatalf("the publisher kept its channel through %v nacks:\n%s", testutil.ToFloat64(m.Nacked), logs.String())
	}
	if seen := drain(t, u, n); len(seen) != n {
		t.Fatalf("%d of %d records in the queue", len(seen), n)
	}
	t.Logf("%v batches nacked; the channel was renewed %d times", testutil.ToFloat64(m.Nacked), renewed)
}

// TestPublisherStopsAtDeadline: with no broker, Run gives up when its
// context ends and says how many records it could not deliver.
func TestPublisherStopsAtDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	p := NewPublisher(PublisherConfig{URL: "amqp://guest:guest@127.0.0.1:1/", Name: "capture-test-none", MaxInFlight: 2, Logger: testLogger(t)})
	in := make(chan Batch, 1)
	var enc record.Encoder
	enc.Reset(1)
	enc.Add(rec(1))
	in <- Batch{Body: enc.Bytes(), Records: 1}
	close(in)
	err := p.Run(ctx, in)
	if err == nil || !strings.Contains(err.Error(), "1 records unconfirmed") {
		t.Fatalf("Run: %v", err)
	}
}

type mgmtAPI struct {
	base, user, pass string
}

func management(t testing.TB) mgmtAPI {
	mgmt, _ := url.Parse(testenv.Management(t))
	user := mgmt.User.Username()
	pass, _ := mgmt.User.Password()
	mgmt.User = nil
	return mgmtAPI{base: strings.TrimRight(mgmt.String(), "/"), user: user, pass: pass}
}

func (m mgmtAPI) do(method, path string) (*http.Response, error) {
	req, _ := http.NewRequest(method, m.base+path, nil)
	req.SetBasicAuth(m.user, m.pass)
	req.Header.Set("X-Reason", "connpipe capture test: forced disconnect")
	return http.DefaultClient.Do(req)
}

// findConnection returns the management API's name of the connection whose
// client-provided name is name, waiting up to 15 s for it to be listed.
func findConnection(t *testing.T, amqpURL, name string) string {
	au, _ := url.Parse(amqpURL)
	vhost := strings.TrimPrefix(au.Path, "/")
	api := management(t)
	for range 150 {
		resp, err := api.do(http.MethodGet, "/api/vhosts/"+url.PathEscape(vhost)+"/connections")
		if err != nil {
			t.Error(err)
			return ""
		}
		var conns []struct {
			Name             string `json:"name"`
			ClientProperties struct {
				ConnectionName string `json:"connection_name"`
			} `json:"client_properties"`
		}
		err = json.NewDecoder(resp.Body).Decode(&conns)
		resp.Body.Close()
		if err != nil {
			t.Error(err)
			return ""
		}
		for _, c := range conns {
			if c.ClientProperties.ConnectionName == name {
				return c.Name
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("connection %q not listed by the management API", name)
	return ""
}

// closeConnection closes a connection from the broker's side.
func closeConnection(t *testing.T, conn string) bool {
	resp, err := management(t).do(http.MethodDelete, "/api/connections/"+url.PathEscape(conn))
	if err != nil {
		t.Error(err)
		return false
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Errorf("close connection %s: %s", conn, resp.Status)
		return false
	}
	return true
}
