package store_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
)

// BenchmarkAdd measures adding a record to a write, per layout, with the
// instance's seconds split 32 ways (layout v2) and the records going to a
// listening address and back from it, as a capture of both directions
// has them.
func BenchmarkAdd(b *testing.B) {
	recs := make([]record.Record, 512)
	now := time.Unix(time.Now().Unix(), 0).UnixNano()
	for i := range recs {
		recs[i] = rec(now+int64(i)*1000, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
		if i%2 == 1 {
			recs[i].Src, recs[i].Dst = recs[i].Dst, netip.MustParseAddr("10.9.9.9")
		}
	}
	for _, v1 := range []bool{true, false} {
		b.Run(fmt.Sprint("layout=v", map[bool]int{true: 1, false: 2}[v1]), func(b *testing.B) {
			bk := store.NewBuckets()
			bk.V1 = v1
			store.LearnSplit(bk, now/int64(time.Second), 5)
			id := record.ID{Producer: 1, Seq: 1}
			for b.Loop() {
				bk.Reset()
				for i := range recs {
					bk.AddMarked(store.Bucket(recs[i].TS, 0, 0), &recs[i], id, i, len(recs))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
		})
	}
}
