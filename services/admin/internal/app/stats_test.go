package app_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The page's data: per-instance counts from Redis (stats), and in status
// the backends' states, the consumers' rates and unacked messages, the
// queue depths and a capture's counters.
func TestStatsAndStatusForThePage(t *testing.T) {
	reg := prometheus.NewRegistry()
	packets := prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_packets_total", Help: "p"})
	reg.MustRegister(packets)
	packets.Add(42)
	capture := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(capture.Close)
	e := apptest.Start(t, func(c *app.Config) { c.CaptureMetricsURL = capture.URL + "/metrics" })

	// 30 records on redis-a and 70 on redis-b, three seconds ago.
	sec := time.Now().Add(-3 * time.Second).Truncate(time.Second)
	recs := func(n int) []record.Record {
		out := make([]record.Record, n)
		for i := range out {
			out[i] = record.Record{TS: sec.Add(time.Duration(i) * time.Millisecond).UnixNano(), Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: uint16(i), DstPort: 80}
		}
		return out
	}
	e.WriteRecords(t, 0, recs(30)...)
	e.WriteRecords(t, 1, recs(70)...)
	var stats api.Stats
	a := e.Read(t, "/api/v1/stats")
	a.Decode(t, &stats)
	if a.Code != http.StatusOK || len(stats.Backends) != 2 || stats.Total != 100 ||
		stats.Backends[0].Records != 30 || stats.Backends[0].Share != 0.3 || stats.Backends[1].Share != 0.7 {
		t.Fatalf("stats: %d %s", a.Code, a.Body)
	}
	if n := stats.To - stats.From + 1; len(stats.Backends[0].Counts) != int(n) || stats.Backends[0].Counts[sec.Unix()-stats.From] != 30 {
		t.Fatalf("series from %d to %d: %v", stats.From, stats.To, stats.Backends[0].Counts)
	}

	// Two messages wait on conn.records (no consumer takes them).
	for range 2 {
		e.Publish(t, topology.RecordsExchange, amqp.Publishing{ContentType: record.ContentTypeJSON, Body: []byte(`{}`)})
	}
	// A consumer storing 200 records/s, holding 3 messages.
	tb, _ := getTable(t, e)
	t0 := time.Now().UnixNano()
	for i, recs := range []uint64{1000, 1200, 1400} {
		e.Heartbeat(t, heartbeat.Message{Consumer: "c1", Position: tb.Position, Ready: true, Records: recs, Unacked: 3,
			Stored: map[string]uint64{"redis-a": recs * 3 / 10, "redis-b": recs * 7 / 10}, SentAt: t0 + int64(i)*int64(time.Second)})
	}
	// redis-a drained.
	if a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":0}}`, bearer(e.Token)); a.Code != http.StatusOK {
		t.Fatalf("drain: %d %s", a.Code, a.Body)
	}

	var st api.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = api.Status{}
		e.Read(t, "/api/v1/status").Decode(t, &st)
		if len(st.Consumers) == 1 && st.Consumers[0].Records == 1400 && st.Broker != nil && st.Broker.Ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the consumer and 2 ready messages: %+v broker %+v", st.Consumers, st.Broker)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := st.Consumers[0]
	if c.Rate != 200 || c.Unacked != 3 || c.Stored["redis-b"] != 980 || c.VersionsBehind != 1 {
		t.Errorf("consumer %+v: want rate 200, 3 unacked, stored redis-b 980, 1 version behind", c)
	}
	if st.Backends[0].State != redisconn.StateDraining || st.Backends[1].State != redisconn.StateUp {
		t.Errorf("states %s %s, want draining up", st.Backends[0].State, st.Backends[1].State)
	}
	if st.Broker.Error != "" || st.Broker.Dead != 0 || st.Broker.Queue != topology.RecordsQueue {
		t.Errorf("broker %+v", st.Broker)
	}
	if st.Capture == nil || st.Capture.Error != "" || st.Capture.Packets != 42 || len(st.Capture.Missing) != 4 {
		t.Errorf("capture %+v", st.Capture)
	}

	// The page itself.
	if a := e.Read(t, "/"); a.Code != http.StatusOK || !strings.Contains(string(a.Body), "ui/app.js") {
		t.Errorf("GET /: %d %.200s", a.Code, a.Body)
	}
}

// An unreachable Redis is shown as ejected, with its error.
func TestEjectedBackend(t *testing.T) {
	e := apptest.Start(t, func(c *app.Config) {
		a, _, _ := strings.Cut(c.Backends, ",")
		c.Backends = a + ",redis-b=127.0.0.1:1"
	})
	var st api.Status
	e.Read(t, "/api/v1/status").Decode(t, &st)
	var b *api.BackendStatus
	for i := range st.Backends {
		if st.Backends[i].Addr == "127.0.0.1:1" {
			b = &st.Backends[i]
		}
	}
	if b == nil || b.State != redisconn.StateEjected || b.Reachable || b.Error == "" {
		t.Fatalf("unreachable backend: %+v", st.Backends)
	}
	var stats api.Stats
	e.Read(t, "/api/v1/stats").Decode(t, &stats)
	for _, in := range stats.Backends {
		if (in.Addr == "127.0.0.1:1") != (in.Error != "") {
			t.Errorf("stats for %s: error %q", in.Addr, in.Error)
		}
	}
}

// A Redis that answers PING but refuses writes (out of memory, say) is
// shown in the state the consumers hold it in, with who says so and why;
// a dead consumer's word no longer counts.
func TestBackendOutOfRotation(t *testing.T) {
	e := apptest.Start(t, nil)
	beat := func(id string, out map[string]heartbeat.Backend) heartbeat.Message {
		m := heartbeat.Message{Consumer: id, Host: "h", Ready: true, DeadLettered: 3,
			SentAt: time.Now().UnixNano(), Interval: 1000}
		m.SetBackends(out)
		return m
	}
	oom := heartbeat.Backend{State: redisconn.StateOOM, Reason: "OOM command not allowed when used memory > 'maxmemory'."}
	e.Heartbeat(t, beat("c1", map[string]heartbeat.Backend{"redis-b": oom}))
	e.Heartbeat(t, beat("c2", nil))
	var st api.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.Read(t, "/api/v1/status").Decode(t, &st)
		if st.ConsumersAlive == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	byName := map[string]api.BackendStatus{}
	for _, b := range st.Backends {
		byName[b.Name] = b
	}
	a, b := byName["redis-a"], byName["redis-b"]
	if a.State != redisconn.StateUp || a.OutBy != nil {
		t.Errorf("redis-a: %+v, want up", a)
	}
	if b.State != redisconn.StateOOM || !b.Reachable || b.OutBy["c1"] != oom || len(b.OutBy) != 1 ||
		!strings.Contains(b.Error, "out of rotation on 1 of 2 live consumers (oom: OOM command") {
		t.Fatalf("redis-b: %+v, want oom as c1 reports it", b)
	}
	for _, c := range st.Consumers {
		if c.DeadLettered != 3 || (c.ID == "c1") != (c.Out["redis-b"] == oom) {
			t.Errorf("consumer %+v", c)
		}
	}
}
