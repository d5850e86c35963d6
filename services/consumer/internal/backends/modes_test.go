package backends

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/redisproc"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fromSources returns perKey records from each of n source IPs, with dstPort
// as a tag and source ports making every record distinct.
func fromSources(n, perKey int, ts int64, tag uint16) []record.Record {
	out := make([]record.Record, 0, n*perKey)
	for p := range perKey {
		for k := range n {
			out = append(out, record.Record{
				TS: ts, Src: netip.AddrFrom4([4]byte{10, 9, byte(k >> 8), byte(k)}), Dst: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
				SrcPort: uint16(1000 + p), DstPort: tag, Flags: record.FlagSYN, IPLen: 60,
			})
		}
	}
	return out
}

// apply folds body into t or fails the test.
func apply(t *testing.T, tb *control.Table, body string) *control.Table {
	t.Helper()
	next, res := control.Apply(tb, tb.Position+1, []byte(body))
	if res.Err != nil {
		t.Fatalf("%s: %v", body, res.Err)
	}
	return next
}

// owners maps each source IP to the backends holding its records, with counts.
func owners(t *testing.T, layout store.Layout, ts int64, addrs map[string]string) map[netip.Addr]map[string]int {
	t.Helper()
	out := map[netip.Addr]map[string]int{}
	for name, addr := range addrs {
		for s, n := range readAll(t, layout, addr, ts/1e9-1, ts/1e9+1) {
			src := netip.MustParseAddr(fieldAt(s, 1))
			if out[src] == nil {
				out[src] = map[string]int{}
			}
			out[src][name] += n
		}
	}
	return out
}

func fieldAt(s string, i int) string {
	f := 0
	start := 0
	for j := 0; j <= len(s); j++ {
		if j == len(s) || s[j] == '\t' {
			if f == i {
				return s[start:j]
			}
			f++
			start = j + 1
		}
	}
	return ""
}

func TestHashModeKeepsKeysTogether(t *testing.T) {
	addrs := testenv.Redis(t, 1)
	own := redisproc.Start(t)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 30},
		control.Backend{Name: "redis-b", Addr: own.Addr, Weight: 70})
	tbl := apply(t, s.Table(), `{"op":"set_mode","mode":"hash","hash_key":"src"}`)
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	go s.RunChecker(ctx)
	ring, _ := routing.NewRing(tbl)
	now := time.Now().UnixNano()
	recs := fromSources(300, 4, now, 1)
	for i := 0; i < len(recs); i += 100 {
		if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs[i : i+100]}}); err != nil {
			t.Fatal(err)
		}
	}
	got := owners(t, layout, now, map[string]string{"redis-a": addrs[0], "redis-b": own.Addr})
	if len(got) != 300 {
		t.Fatalf("%d sources stored, want 300", len(got))
	}
	onB := 0
	for src, by := range got {
		r := record.Record{Src: src}
		want := tbl.Backends[ring.Pick(routing.HashSrc(&r))].Name
		if len(by) != 1 || by[want] != 4 {
			t.Fatalf("source %s stored as %v, want 4 on %s", src, by, want)
		}
		if want == "redis-b" {
			onB++
		}
	}
	if onB < 180 || onB > 240 {
		t.Fatalf("%d of 300 sources on redis-b (weight 70 %%)", onB)
	}

	// redis-b dies: its keys go to redis-a, redis-a's keys stay.
	own.Kill()
	tag2 := fromSources(300, 1, now, 2)
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: tag2}}); err != nil {
		t.Fatal(err)
	}
	if s.Up("redis-b") {
		t.Fatal("redis-b still up")
	}
	a := readAll(t, layout, addrs[0], now/1e9-1, now/1e9+1)
	if n := countTag(a, tag2); n != 300 {
		t.Fatalf("with redis-b down %d of 300 records on redis-a", n)
	}
}

// Sticky: keys stay where they first landed across a weight change and a
// restart (a new Sink with an empty cache), while new keys follow the new
// weights.
func TestStickyAcrossWeightChangeAndRestart(t *testing.T) {
	addrs := testenv.Redis(t, 2)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 50},
		control.Backend{Name: "redis-b", Addr: addrs[1], Weight: 50})
	tbl := apply(t, s.Table(), `{"op":"set_mode","mode":"weighted","sticky":true}`)
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	now := time.Now().UnixNano()
	first := fromSources(200, 2, now, 1)
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: first}}); err != nil {
		t.Fatal(err)
	}
	tbl = apply(t, tbl, `{"op":"set_weights","weights":{"redis-a":1,"redis-b":99}}`)
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: fromSources(200, 1, now, 2)}}); err != nil {
		t.Fatal(err)
	}
	// Restart: a fresh sink, nothing cached.
	s2, err := New(Config{Layout: layout, Timeout: time.Second}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Store(ctx, []*record.Batch{{Ingest: now, Records: fromSources(200, 1, now, 3)}}); err != nil {
		t.Fatal(err)
	}
	// 100 new keys after the change follow 1/99.
	fresh := make([]record.Record, 100)
	for i := range fresh {
		fresh[i] = record.Record{TS: now, Src: netip.AddrFrom4([4]byte{10, 8, 0, byte(i)}), Dst: netip.AddrFrom4([4]byte{192, 0, 2, 1}), DstPort: 4}
	}
	if err := s2.Store(ctx, []*record.Batch{{Ingest: now, Records: fresh}}); err != nil {
		t.Fatal(err)
	}
	got := owners(t, layout, now, map[string]string{"redis-a": addrs[0], "redis-b": addrs[1]})
	firstA := 0
	for src, by := range got {
		if len(by) != 1 {
			t.Fatalf("source %s split over backends: %v", src, by)
		}
		if src.As4()[1] == 9 && by["redis-a"] > 0 {
			firstA++
		}
	}
	if firstA != 100 {
		t.Fatalf("%d of the first 200 sources on redis-a, want 100 (50/50 when they landed)", firstA)
	}
	b := readAll(t, layout, addrs[1], now/1e9-1, now/1e9+1)
	if n := countTag(b, fresh); n != 99 {
		t.Fatalf("%d of 100 new sources on redis-b after 1/99, want 99", n)
	}
	if n := testutil.ToFloat64(s2.m.Stick.WithLabelValues("redis")); n < 200 {
		t.Fatalf("restarted sink read %v owners from the stick home, want >= 200", n)
	}
	if n := testutil.ToFloat64(s.m.Stick.WithLabelValues("cache")); n < 200 {
		t.Fatalf("sink used its cache for %v keys, want >= 200", n)
	}
}

// A backend added to the table is written to on the next round, with no
// restart; a removed one has its client closed.
func TestRuntimeBackends(t *testing.T) {
	addrs := testenv.Redis(t, 3)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 50},
		control.Backend{Name: "redis-b", Addr: addrs[1], Weight: 50})
	ctx := testenv.Context(t, 10*time.Second)
	now := time.Now().UnixNano()
	tbl := apply(t, s.Table(), fmt.Sprintf(`{"op":"add_backend","backend":{"name":"redis-c","addr":%q,"weight":100}}`, addrs[2]))
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	recs := gen(0, 200, now, 1)
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs}}); err != nil {
		t.Fatal(err)
	}
	if n := countTag(readAll(t, layout, addrs[2], now/1e9-1, now/1e9+1), recs); n != 100 {
		t.Fatalf("new backend got %d of 200 records at weight 100 of 200", n)
	}
	tbl = apply(t, tbl, `{"op":"remove_backend","name":"redis-c"}`)
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	recs = gen(1000, 100, now, 2)
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs}}); err != nil {
		t.Fatal(err)
	}
	if n := countTag(readAll(t, layout, addrs[2], now/1e9-1, now/1e9+1), recs); n != 0 {
		t.Fatalf("removed backend got %d records", n)
	}
	s.mu.Lock()
	n := len(s.pool)
	s.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d clients in the pool after removing redis-c, want 2", n)
	}
	if n := testutil.CollectAndCount(s.m.Share); n != 2 {
		t.Fatalf("target_share has %d series after removing redis-c, want 2", n)
	}
	if got := testutil.ToFloat64(s.m.Share.WithLabelValues("redis-a")); got != 0.5 {
		t.Fatalf("target_share{redis-a} = %v, want 0.5", got)
	}
}

// With the stick home down, records are still stored (by the mode's
// choice), the fallback is counted, and lookups resume when it returns.
func TestStickHomeDown(t *testing.T) {
	addrs := testenv.Redis(t, 1)
	own := redisproc.Start(t)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: own.Addr, Weight: 50}, // first by name: the stick home
		control.Backend{Name: "redis-b", Addr: addrs[0], Weight: 50})
	if err := s.SetTable(apply(t, s.Table(), `{"op":"set_mode","mode":"hash","sticky":true}`)); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	go s.RunChecker(ctx)
	now := time.Now().UnixNano()
	own.Kill()
	recs := fromSources(50, 2, now, 1)
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: recs}}); err != nil {
		t.Fatal(err)
	}
	if n := countTag(readAll(t, layout, addrs[0], now/1e9-1, now/1e9+1), recs); n != 100 {
		t.Fatalf("with the stick home down %d of 100 records on redis-b", n)
	}
	if n := testutil.ToFloat64(s.m.Stick.WithLabelValues("fallback")); n < 50 {
		t.Fatalf("stick fallback counted %v keys, want >= 50", n)
	}
	own.Restart()
	waitUp(t, s, "redis-a", true)
	before := testutil.ToFloat64(s.m.Stick.WithLabelValues("redis"))
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: fromSources(50, 1, now, 2)}}); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(s.m.Stick.WithLabelValues("redis")) - before; n != 50 {
		t.Fatalf("%v keys read from the stick home after it returned, want 50", n)
	}
}
