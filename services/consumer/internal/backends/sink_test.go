package backends

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/redisproc"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// gen returns n distinct IPv4 records starting at seq, stamped ts, with
// dstPort as a tag.
func gen(seq, n int, ts int64, dstPort uint16) []record.Record {
	out := make([]record.Record, n)
	for i := range out {
		k := seq + i
		out[i] = record.Record{
			TS:      ts + int64(k),
			Src:     netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)}),
			Dst:     netip.AddrFrom4([4]byte{192, 0, 2, 1}),
			SrcPort: uint16(k), DstPort: dstPort, Flags: record.FlagSYN, IPLen: 60,
		}
	}
	return out
}

func newSink(t testing.TB, layout store.Layout, backends ...control.Backend) *Sink {
	t.Helper()
	tbl, err := control.NewTable(backends)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Layout: layout, Timeout: time.Second, CheckInterval: 100 * time.Millisecond}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll reads the records in seconds from..to of addr, keyed by their
// text form, with how often each was stored.
func readAll(t testing.TB, layout store.Layout, addr string, from, to int64) map[string]int {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	got := map[string]int{}
	err := layout.Read(context.Background(), rdb, from, to, store.Filter{}, func(r *record.Record) { got[r.String()]++ })
	if err != nil {
		t.Fatalf("read %s: %v", addr, err)
	}
	return got
}

func countTag(m map[string]int, recs []record.Record) int {
	n := 0
	for i := range recs {
		n += m[recs[i].String()]
	}
	return n
}

func TestStoreReadsBack(t *testing.T) {
	addrs := testenv.Redis(t, 2)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: 30 * time.Second}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 30},
		control.Backend{Name: "redis-b", Addr: addrs[1], Weight: 70})
	now := time.Now().UnixNano()
	var msgs []*record.Batch
	var all []record.Record
	for m := range 3 {
		recs := gen(m*1000, 1000, now, 80)
		all = append(all, recs...)
		msgs = append(msgs, &record.Batch{Ingest: now, Records: recs})
	}
	ctx := testenv.Context(t, 10*time.Second)
	if err := s.Store(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	from, to := now/1e9-1, now/1e9+2
	a := readAll(t, layout, addrs[0], from, to)
	b := readAll(t, layout, addrs[1], from, to)
	if na, nb := countTag(a, all), countTag(b, all); na != 900 || nb != 2100 {
		t.Errorf("split %d/%d, want 900/2100", na, nb)
	}
	for _, r := range all {
		if n := a[r.String()] + b[r.String()]; n != 1 {
			t.Fatalf("record %s stored %d times", r, n)
		}
	}
	if s.Stored() != 3000 {
		t.Errorf("Stored() = %d, want 3000", s.Stored())
	}
}

// A record stays readable for the retention window from its bucket and is
// gone at most a second after.
func TestRetention(t *testing.T) {
	addrs := testenv.Redis(t, 1)
	const retention = 3 * time.Second
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: retention}
	s := newSink(t, layout, control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 1})
	start := time.Now()
	recs := gen(0, 1, start.UnixNano(), 80)
	ctx := testenv.Context(t, 20*time.Second)
	if err := s.Store(ctx, []*record.Batch{{Ingest: start.UnixNano(), Records: recs}}); err != nil {
		t.Fatal(err)
	}
	sec := start.Unix()
	present := func() bool { return readAll(t, layout, addrs[0], sec, sec)[recs[0].String()] == 1 }
	for time.Since(start) < retention-100*time.Millisecond {
		if !present() {
			t.Fatalf("record gone %v after it was captured, retention %v", time.Since(start), retention)
		}
		time.Sleep(100 * time.Millisecond)
	}
	limit := start.Add(retention + time.Second + 100*time.Millisecond)
	for present() {
		if time.Now().After(limit) {
			t.Fatalf("record still readable %v after it was captured, retention %v", time.Since(start), retention)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("record gone %v after capture (retention %v)", time.Since(start).Round(10*time.Millisecond), retention)
}

func waitUp(t *testing.T, s *Sink, name string, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Up(name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("backend %s up=%v after 5s, want %v", name, !want, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill a backend mid-stream: its records go to the other one, nothing is
// lost, and it rejoins when it answers again.
func TestEjection(t *testing.T) {
	addrs := testenv.Redis(t, 1)
	own := redisproc.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 30},
		control.Backend{Name: "redis-b", Addr: own.Addr, Weight: 70})
	ctx := testenv.Context(t, 30*time.Second)
	go s.RunChecker(ctx)

	now := time.Now().UnixNano()
	phase := func(seq int, tag uint16) []record.Record {
		var all []record.Record
		for round := range 10 {
			recs := gen(seq+round*100, 100, now, tag)
			if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs}}); err != nil {
				t.Fatalf("store round %d of phase %d: %v", round, tag, err)
			}
			all = append(all, recs...)
		}
		return all
	}
	before := phase(0, 1)
	own.Kill()
	during := phase(10000, 2)
	if s.Up("redis-b") {
		t.Fatal("redis-b still in rotation after it was killed")
	}
	own.Restart()
	waitUp(t, s, "redis-b", true)
	after := phase(20000, 3)

	from, to := now/1e9-1, now/1e9+2
	a := readAll(t, layout, addrs[0], from, to)
	b := readAll(t, layout, own.Addr, from, to)
	for _, r := range slices.Concat(before, during, after) {
		if a[r.String()]+b[r.String()] == 0 {
			t.Fatalf("record %s lost", r)
		}
	}
	if n := countTag(b, during); n != 0 {
		t.Errorf("%d records went to the dead backend", n)
	}
	if na, nb := countTag(a, before), countTag(b, before); na != 300 || nb != 700 {
		t.Errorf("before the kill: %d/%d, want 300/700", na, nb)
	}
	if na, nb := countTag(a, after), countTag(b, after); na != 300 || nb != 700 {
		t.Errorf("after the restart: %d/%d, want 300/700", na, nb)
	}
	if got := testutil.ToFloat64(s.m.WriteErrors.WithLabelValues("redis-b")); got < 1 {
		t.Errorf("write_errors_total{backend=redis-b} = %v, want >= 1", got)
	}
}

// With every backend down a round waits, unacked, until one comes back.
func TestNoBackendWaits(t *testing.T) {
	own := redisproc.Start(t)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout, control.Backend{Name: "only", Addr: own.Addr, Weight: 1})
	ctx := testenv.Context(t, 30*time.Second)
	go s.RunChecker(ctx)
	own.Kill()
	now := time.Now().UnixNano()
	recs := gen(0, 50, now, 9)
	errc := make(chan error, 1)
	go func() { errc <- s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs}}) }()
	select {
	case err := <-errc:
		t.Fatalf("Store returned with no backend up: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	own.Restart()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Store did not finish after the backend came back")
	}
	if got := countTag(readAll(t, layout, own.Addr, now/1e9-1, now/1e9+1), recs); got != 50 {
		t.Fatalf("%d of 50 records stored", got)
	}

	// A round whose context ends while no backend is up reports it.
	own.Kill()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := s.Store(short, []*record.Batch{{Ingest: now, Records: recs}}); err == nil {
		t.Fatal("Store with every backend down and an ending context returned nil")
	}
}

func TestSetTable(t *testing.T) {
	addrs := testenv.Redis(t, 2)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: 30 * time.Second}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 30},
		control.Backend{Name: "redis-b", Addr: addrs[1], Weight: 70})
	ctx := testenv.Context(t, 10*time.Second)
	now := time.Now().UnixNano()
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: gen(0, 3, now, 1)}}); err != nil {
		t.Fatal(err)
	}
	next, res := control.Apply(s.Table(), 0, []byte(`{"op":"set_weights","weights":{"redis-a":50,"redis-b":50}}`))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if err := s.SetTable(next); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTable(&control.Table{Backends: []control.Backend{{Name: "redis-a", Addr: addrs[0]}}}); err == nil {
		t.Fatal("SetTable accepted a table with no capacity")
	}
	if s.Table() != next {
		t.Fatal("a refused table replaced the one in force")
	}
	recs := gen(100, 100, now, 2)
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs}}); err != nil {
		t.Fatal(err)
	}
	a := readAll(t, layout, addrs[0], now/1e9-1, now/1e9+1)
	b := readAll(t, layout, addrs[1], now/1e9-1, now/1e9+1)
	if na, nb := countTag(a, recs), countTag(b, recs); na != 50 || nb != 50 {
		t.Fatalf("after the change to 50/50: %d/%d", na, nb)
	}
	if w := testutil.ToFloat64(s.m.Weight.WithLabelValues("redis-a")); w != 50 {
		t.Fatalf("backend_weight{redis-a} = %v, want 50", w)
	}
}

// storeMany stores n records spread evenly over `seconds` seconds ending
// now, from 65,536 sources (IPv6: spread over a /32) to one destination,
// as capture sends them:
// named batches of `batch` records, each stored in a round of its own.
func storeMany(tb testing.TB, s *Sink, n, batch, seconds int, v6 bool) {
	base := time.Now().Add(-time.Duration(seconds) * time.Second).UnixNano()
	step := int64(seconds) * int64(time.Second) / int64(n)
	msg := &record.Batch{ID: record.ID{Producer: 0xc0ffee}}
	dst := netip.AddrFrom4([4]byte{192, 0, 2, 1})
	if v6 {
		dst = netip.MustParseAddr("2001:db8::1")
	}
	for done := 0; done < n; {
		k := min(batch, n-done)
		msg.Records = msg.Records[:0]
		msg.ID.Seq++
		msg.First = uint64(done)
		for i := range k {
			seq := done + i
			h := uint32(seq) * 2654435761
			src := netip.AddrFrom4([4]byte{10, 1, byte(h >> 24), byte(h >> 16)})
			if v6 {
				// Clients spread over a /32: 12 bytes of each source vary.
				var a [16]byte
				a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
				for b := 4; b < 16; b++ {
					a[b] = byte((h * uint32(b*7919)) >> 24)
				}
				src = netip.AddrFrom16(a)
			}
			msg.Records = append(msg.Records, record.Record{
				TS: base + int64(seq)*step, Src: src, Dst: dst,
				SrcPort: uint16(h), DstPort: 443, Flags: record.FlagSYN, IPLen: 60,
			})
		}
		msg.Ingest = msg.Records[0].TS
		if err := s.Store(context.Background(), []*record.Batch{msg}); err != nil {
			tb.Fatal(err)
		}
		done += k
	}
}

// bytesPerRecord stores n records of a 5-minute window on a private
// redis-server and returns MEMORY USAGE of every key under the prefix
// over n.
func bytesPerRecord(tb testing.TB, n int, v6 bool) float64 {
	own := redisproc.Start(tb)
	layout := store.Layout{Prefix: "m:", Retention: 6 * time.Minute}
	s := newSink(tb, layout, control.Backend{Name: "only", Addr: own.Addr, Weight: 1})
	storeMany(tb, s, n, 512, 300, v6)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	defer rdb.Close()
	var total int64
	iter := rdb.Scan(ctx, 0, layout.Prefix+"*", 10000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Fatal(err)
	}
	for len(keys) > 0 {
		part := keys[:min(len(keys), 5000)]
		keys = keys[len(part):]
		cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range part {
				p.MemoryUsage(ctx, k, 0)
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		for _, c := range cmds {
			total += c.(*redis.IntCmd).Val()
		}
	}
	if got := s.Stored(); got != uint64(n) {
		tb.Fatalf("stored %d of %d records", got, n)
	}
	return float64(total) / float64(n)
}

// Memory per stored record, as MEMORY USAGE of every key under the prefix
// over the records stored: 3,000,000 records of a 5-minute window (10,000
// a second), IPv4 and IPv6.
func TestMemoryPerRecord(t *testing.T) {
	n := 3_000_000
	if testing.Short() {
		n = 300_000
	}
	for _, c := range []struct {
		v6   bool
		most float64
	}{{false, 15}, {true, 27}} {
		bpr := bytesPerRecord(t, n, c.v6)
		t.Logf("%.2f bytes of Redis memory per stored record (IPv6 %v, %d records over 300 s)", bpr, c.v6, n)
		if bpr > c.most || bpr < 5 {
			t.Errorf("IPv6 %v: %.2f bytes per record, want 5 <= x <= %v", c.v6, bpr, c.most)
		}
	}
}

func BenchmarkMemoryPerRecord(b *testing.B) {
	for b.Loop() {
		b.ReportMetric(bytesPerRecord(b, 3_000_000, false), "B/record")
	}
}

// BenchmarkStore measures records/s through the real write path: rounds of
// 4096 IPv4 records routed 30/70 over two private redis-servers.
// BenchmarkStore stores rounds of 8 capture batches of 512 records (4096
// records) on two private Redis servers, 30/70, in store layout v1 and v2.
func BenchmarkStore(b *testing.B) {
	for _, v1 := range []bool{true, false} {
		name := "layout=v2"
		if v1 {
			name = "layout=v1"
		}
		b.Run(name, func(b *testing.B) {
			a, c := redisproc.Start(b), redisproc.Start(b)
			layout := store.Layout{Prefix: "b:", Retention: 5 * time.Second}
			tbl, err := control.NewTable([]control.Backend{{Name: "redis-a", Addr: a.Addr, Weight: 30}, {Name: "redis-b", Addr: c.Addr, Weight: 70}})
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(Config{Layout: layout, V1: v1, Timeout: time.Second}, tbl)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			const batch, batches = 512, 8
			now := time.Now().UnixNano()
			msgs := make([]*record.Batch, batches)
			for i := range msgs {
				msgs[i] = &record.Batch{Ingest: now, Records: gen(i*batch, batch, now, 443), ID: record.ID{Producer: 7}}
			}
			ctx := context.Background()
			b.ReportAllocs()
			start := time.Now()
			n, seq := 0, uint64(0)
			for b.Loop() {
				for _, m := range msgs {
					seq++
					m.ID.Seq, m.First = seq, seq*batch
				}
				if err := s.Store(ctx, msgs); err != nil {
					b.Fatal(err)
				}
				n += batch * batches
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
		})
	}
}

func TestBackoff(t *testing.T) {
	prev := time.Duration(0)
	for i := range 10 {
		d := backoff(i)
		if d < prev || d > time.Second || d <= 0 {
			t.Fatalf("backoff(%d) = %v after %v", i, d, prev)
		}
		prev = d
	}
	if backoff(100) != time.Second {
		t.Fatal(fmt.Sprint("backoff is not capped at 1s: ", backoff(100)))
	}
}
