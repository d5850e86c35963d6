package backends

import (
	"context"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/redisproc"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
)

// BenchmarkStoreModes is BenchmarkStore in each routing mode: rounds of
// 4096 records from 500 source IPs. Sticky rounds hit the owner cache after
// the first (a lookup every StickRefresh per key).
func BenchmarkStoreModes(b *testing.B) {
	for _, mode := range []struct{ name, body string }{
		{"weighted", `{"op":"set_mode","mode":"weighted"}`},
		{"hash", `{"op":"set_mode","mode":"hash","hash_key":"src"}`},
		{"hash-sticky", `{"op":"set_mode","mode":"hash","hash_key":"src","sticky":true}`},
		{"weighted-sticky", `{"op":"set_mode","mode":"weighted","sticky":true}`},
	} {
		b.Run(mode.name, func(b *testing.B) {
			a, c := redisproc.Start(b), redisproc.Start(b)
			layout := store.Layout{Prefix: "b:", Retention: 5 * time.Second}
			s := newSink(b, layout,
				control.Backend{Name: "redis-a", Addr: a.Addr, Weight: 30},
				control.Backend{Name: "redis-b", Addr: c.Addr, Weight: 70})
			tb, res := control.Apply(s.Table(), 0, []byte(mode.body))
			if res.Err != nil {
				b.Fatal(res.Err)
			}
			if err := s.SetTable(tb); err != nil {
				b.Fatal(err)
			}
			now := time.Now().UnixNano()
			recs := fromSources(500, 9, now, 443)[:4096]
			msgs := []*record.Batch{{Ingest: now, Records: recs}}
			ctx := context.Background()
			b.ReportAllocs()
			start := time.Now()
			n := 0
			for b.Loop() {
				if err := s.Store(ctx, msgs); err != nil {
					b.Fatal(err)
				}
				n += len(recs)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
		})
	}
}
