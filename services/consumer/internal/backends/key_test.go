package backends

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
)

// keyed returns n records for each of ids payload keys, each record from
// one of srcs source IPs (so a source carries several keys and a key comes
// from several sources), tagged with dstPort.
func keyed(ids, srcs, n int, ts int64, tag uint16) []record.Record {
	var out []record.Record
	for i := range ids {
		for j := range n {
			s := (i*7 + j) % srcs
			out = append(out, record.Record{
				TS: ts, Src: netip.AddrFrom4([4]byte{10, 7, 0, byte(s)}), Dst: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
				SrcPort: uint16(2000 + j), DstPort: tag, Flags: record.FlagACK, IPLen: 40, Key: fmt.Sprintf("sess-%02d", i),
			})
		}
	}
	return out
}

// keysOn maps each key to the backends holding its records.
func keysOn(t *testing.T, layout store.Layout, ts int64, addrs map[string]string) map[string]map[string]int {
	t.Helper()
	out := map[string]map[string]int{}
	for name, addr := range addrs {
		for s, n := range readAll(t, layout, addr, ts/1e9-1, ts/1e9+1) {
			k := fieldAt(s, 7)
			if out[k] == nil {
				out[k] = map[string]int{}
			}
			out[k][name] += n
		}
	}
	return out
}

// TestPayloadKeyRouting: in hash mode with the stick table, a record's
// payload key decides its instance (not its source IP), a key stays on its
// instance across a weight change and a restart, and records without a key
// still go by source IP.
func TestPayloadKeyRouting(t *testing.T) {
	addrs := testenv.Redis(t, 2)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	s := newSink(t, layout,
		control.Backend{Name: "redis-a", Addr: addrs[0], Weight: 50},
		control.Backend{Name: "redis-b", Addr: addrs[1], Weight: 50})
	tbl := apply(t, s.Table(), `{"op":"set_mode","mode":"hash","hash_key":"src","sticky":true}`)
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	ring, _ := routing.NewRing(tbl)
	now := time.Now().UnixNano()
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: keyed(40, 12, 5, now, 1)}}); err != nil {
		t.Fatal(err)
	}
	first := map[string]string{}
	for i := range 40 {
		k := fmt.Sprintf("sess-%02d", i)
		first[k] = tbl.Backends[ring.Pick(routing.HashRecordKey(k))].Name
	}
	tbl = apply(t, tbl, `{"op":"set_weights","weights":{"redis-a":1,"redis-b":99}}`)
	if err := s.SetTable(tbl); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, []*record.Batch{{Ingest: now, Records: keyed(40, 12, 2, now, 2)}}); err != nil {
		t.Fatal(err)
	}
	s2, err := New(Config{Layout: layout, Timeout: time.Second}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Store(ctx, []*record.Batch{{Ingest: now, Records: keyed(40, 12, 2, now, 3)}}); err != nil {
		t.Fatal(err)
	}
	unkeyed := fromSources(50, 1, now, 4)
	if err := s2.Store(ctx, []*record.Batch{{Ingest: now, Records: unkeyed}}); err != nil {
		t.Fatal(err)
	}
	got := keysOn(t, layout, now, map[string]string{"redis-a": addrs[0], "redis-b": addrs[1]})
	onA := 0
	for k, want := range first {
		by := got[k]
		if len(by) != 1 || by[want] != 9 {
			t.Fatalf("key %s stored as %v, want all 9 records on %s", k, by, want)
		}
		if want == "redis-a" {
			onA++
		}
	}
	if onA == 0 || onA == 40 {
		t.Fatalf("%d of 40 keys on redis-a at 50/50", onA)
	}
	// Unkeyed records: by source IP, through the stick table (new keys at 1/99).
	srcs := owners(t, layout, now, map[string]string{"redis-a": addrs[0], "redis-b": addrs[1]})
	for _, r := range unkeyed {
		if by := srcs[r.Src]; len(by) != 1 {
			t.Fatalf("unkeyed source %s on %v", r.Src, by)
		}
	}
}
