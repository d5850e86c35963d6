package intake

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// countingStore counts its calls and stores nothing.
type countingStore struct{ calls atomic.Int64 }

func (s *countingStore) Store(context.Context, []*record.Batch) error {
	s.calls.Add(1)
	return nil
}

// hostileArray is `[{},{},…]` of n bytes.
func hostileArray(n int) []byte {
	b := make([]byte, 0, n)
	b = append(b, '[')
	for len(b) < n-3 {
		b = append(b, "{},"...)
	}
	return append(b, "{}]"...)
}

// heapPeak samples HeapAlloc until stop is closed and returns the highest.
func heapPeak(stop <-chan struct{}) <-chan heapPeaks {
	out := make(chan heapPeaks, 1)
	go func() {
		var peak heapPeaks
		var ms runtime.MemStats
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak.alloc = max(peak.alloc, ms.HeapAlloc)
			peak.live = max(peak.live, liveHeap())
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// heapPeaks are the most a heap held: alloc counts garbage not yet
// collected (how much depends on when the collector ran, and so on the
// machine's load); live is what the last collection found reachable.
type heapPeaks struct{ alloc, live uint64 }

// liveHeap is the heap the last garbage collection found reachable.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// The 16 MiB hostile body `[{},{},…]` and a 4 MiB one are each
// dead-lettered too_large without being decoded, and the consumer's live
// heap stays within 64 MB of its idle heap while it receives one. (What it
// allocates is the AMQP client assembling the body, about twice the body
// at the last growth; RabbitMQ's max_message_size keeps such bodies off
// the queue in the first place. The heap with its garbage is logged: it
// peaked at 43 to 69 MB over idle for the 16 MiB body, depending on when
// the collector ran.)
func TestHostileBodiesDeadLetteredUndecoded(t *testing.T) {
	for _, size := range []int{16 << 20, 4 << 20} {
		t.Run(strconv.Itoa(size>>20)+"MiB", func(t *testing.T) { hostileBody(t, size) })
	}
}

func hostileBody(t *testing.T, size int) {
	url := testenv.AMQP(t)
	ch := testenv.Channel(t, url)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	// The body is published before the consumer consumes (the gate holds
	// it back), so the publisher's buffers are not counted in the
	// consumer's heap: a hostile client is another process.
	testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{ContentType: record.ContentTypeJSON, Body: hostileArray(size)})
	st := &countingStore{}
	m := NewMetrics(nil)
	gate := make(chan struct{})
	in := New(Config{URL: url, ConsumerID: "hostile", Store: st, Metrics: m, Gate: gate, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	eventually(t, 10*time.Second, "a connection", in.Connected)

	var idle, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&idle)
	idleLive := liveHeap()
	stop := make(chan struct{})
	peakc := heapPeak(stop)
	close(gate)
	tooLarge := m.DeadLettered.WithLabelValues("too_large")
	eventually(t, 30*time.Second, "the body dead-lettered too_large", func() bool {
		return testutil.ToFloat64(tooLarge) == 1 && in.Acked() == 1
	})
	close(stop)
	peak := <-peakc
	runtime.ReadMemStats(&after)
	grew := int64(peak.live) - int64(idleLive)
	t.Logf("%d MiB body: live heap %.1f MB idle, %.1f MB at most (+%.1f MB); heap with garbage %.1f MB idle, %.1f MB at most; %.1f MB allocated in all",
		size>>20, mb(idleLive), mb(peak.live), float64(grew)/1e6, mb(idle.HeapAlloc), mb(peak.alloc), mb(after.TotalAlloc-idle.TotalAlloc))
	if grew > 64e6 {
		t.Errorf("live heap grew %.1f MB over idle, want under 64 MB", float64(grew)/1e6)
	}
	if got := testutil.ToFloat64(m.Received); got != 0 {
		t.Errorf("%v records decoded from a body over the limit", got)
	}
	if n := st.calls.Load(); n != 0 {
		t.Errorf("store called %d times", n)
	}
	if in.DeadLettered() != 1 {
		t.Errorf("dead-lettered %d, want 1", in.DeadLettered())
	}
	d, ok, err := ch.Get(topology.DeadQueue, true)
	if err != nil || !ok {
		t.Fatalf("dead letter: ok %v err %v", ok, err)
	}
	reason, _ := d.Headers[topology.ErrorHeader].(string)
	if len(d.Body) != size || !strings.Contains(reason, "too large") || !strings.Contains(reason, "MAX_MESSAGE_BYTES") {
		t.Errorf("dead letter of %d bytes says %q, want the %d-byte body and the size limit", len(d.Body), reason, size)
	}
}

func mb(n uint64) float64 { return float64(n) / 1e6 }

// redisStore writes batches to one real Redis as the sink does.
type redisStore struct {
	l   store.Layout
	rdb *redis.Client
	mu  sync.Mutex
	n   int
}

func (s *redisStore) Store(ctx context.Context, msgs []*record.Batch) error {
	b := store.NewBuckets()
	for _, m := range msgs {
		for i := range m.Records {
			b.Add(store.Bucket(m.Records[i].TS, m.Ingest, m.Received), &m.Records[i])
		}
	}
	s.mu.Lock()
	s.n += b.Len()
	s.mu.Unlock()
	_, err := s.l.Write(ctx, s.rdb, b)
	return err
}

// A hand-published record stamped in the year 2100 (with an AMQP timestamp
// in 2100 too) is stored by the time it was received: its key's TTL is at
// most RETENTION + 1 s, and it is counted as stamped in the future.
func TestYear2100RecordExpiresWithinRetention(t *testing.T) {
	url := testenv.AMQP(t)
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	const retention = 5 * time.Minute
	st := &redisStore{l: store.Layout{Prefix: testenv.Prefix(t), Retention: retention}, rdb: rdb}
	m := NewMetrics(nil)
	in := New(Config{URL: url, ConsumerID: "y2100", Store: st, Metrics: m, Retention: retention, Logger: slog.New(slog.DiscardHandler)})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ch := testenv.Channel(t, url)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	y2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	body := `{"ts_ns":` + itoa(y2100.UnixNano()) + `,"src_ip":"10.9.9.9","dst_ip":"10.0.0.1","src_port":1,"dst_port":7000}`
	testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{ContentType: record.ContentTypeJSON, Timestamp: y2100, Body: []byte(body)})
	eventually(t, 10*time.Second, "the record acked", func() bool { return in.Acked() == 1 })
	keys, err := rdb.Keys(ctx, st.l.Prefix+"*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v (err %v), want one list and its counter", keys, err)
	}
	for _, k := range keys {
		ttl := rdb.PTTL(ctx, k).Val()
		t.Logf("year-2100 record stored in %s, PTTL %v (RETENTION %v)", k, ttl, retention)
		if ttl <= 0 || ttl > retention+time.Second {
			t.Fatalf("%s: PTTL %v, want (0, %v]", k, ttl, retention+time.Second)
		}
	}
	if got := testutil.ToFloat64(m.OutOfWindow.WithLabelValues("future")); got != 1 {
		t.Fatalf("out-of-window future count %v, want 1", got)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
