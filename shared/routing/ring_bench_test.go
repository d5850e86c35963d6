package routing

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
)

// TestRingProperties checks the share and movement properties over random
// weight vectors (a fixed seed, so a failure reproduces).
func TestRingProperties(t *testing.T) {
	ks := keys(nKeys)
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"redis-a", "redis-b", "redis-c", "redis-d", "redis-e"}
	for round := range 12 {
		n := 2 + rng.IntN(4)
		ws := map[string]int{}
		for _, name := range names[:n] {
			ws[name] = 1 + rng.IntN(control.MaxWeight)
		}
		tb := named(ws)
		before := assign(mustRing(t, tb), ks)
		if e := maxShareError(tb, before); e > 1 {
			t.Fatalf("round %d %s: share off by %.3f pp", round, tb, e)
		}
		// Change one weight: keys move only onto it (raise) or only off it
		// (lower), and no more than the new weights require + 2 pp.
		changed := names[rng.IntN(n)]
		old := ws[changed]
		ws[changed] = 1 + rng.IntN(control.MaxWeight)
		tb2 := named(ws)
		after := assign(mustRing(t, tb2), ks)
		oldTotal, newTotal := 0, 0
		for _, b := range tb.Backends {
			oldTotal += b.Weight
		}
		for _, b := range tb2.Backends {
			newTotal += b.Weight
		}
		oldShare, newShare := float64(old)/float64(oldTotal), float64(ws[changed])/float64(newTotal)
		minimum := 100 * abs(newShare-oldShare)
		for i := range ks {
			if before[i] == after[i] {
				continue
			}
			if ws[changed] > old && after[i] != changed || ws[changed] < old && before[i] != changed {
				t.Fatalf("round %d %s→%s: key moved %s → %s", round, tb, tb2, before[i], after[i])
			}
		}
		if got := moved(before, after); got > minimum+2 {
			t.Fatalf("round %d %s→%s: moved %.2f %%, minimum %.2f %%", round, tb, tb2, got, minimum)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// BenchmarkRing reports the must-show figures over 100,000 keys — the
// largest share error (pp), the keys moved by 30/70 → 50/50 beyond the 20 %
// minimum (pp), and the keys that moved anywhere but onto a newly added
// third backend (%) — and the cost of routing one record (key hash + pick).
func BenchmarkRing(b *testing.B) {
	ks := keys(nKeys)
	t3070 := named(map[string]int{"redis-a": 30, "redis-b": 70})
	t5050 := named(map[string]int{"redis-a": 50, "redis-b": 50})
	t3 := named(map[string]int{"redis-a": 30, "redis-b": 70, "redis-c": 50})
	r3070, r5050, r3 := mustRing(b, t3070), mustRing(b, t5050), mustRing(b, t3)
	a3070, a5050, a3 := assign(r3070, ks), assign(r5050, ks), assign(r3, ks)
	wrong := 0
	for i := range ks {
		if a3070[i] != a3[i] && a3[i] != "redis-c" {
			wrong++
		}
	}
	shareErr := max(maxShareError(t3070, a3070), maxShareError(t5050, a5050), maxShareError(t3, a3))

	recs := make([]record.Record, 4096)
	for i := range recs {
		recs[i] = record.Record{Src: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("192.0.2.1"), SrcPort: uint16(i), DstPort: 80}
	}
	b.ReportAllocs()
	b.ResetTimer()
	sink := 0
	for i := 0; b.Loop(); i++ {
		sink += r3.Pick(HashFlow(&recs[i&4095]))
	}
	_ = sink
	b.ReportMetric(shareErr, "max-share-err-pp")
	b.ReportMetric(moved(a3070, a5050)-20, "extra-moved-pp")
	b.ReportMetric(100*float64(wrong)/nKeys, "moved-not-onto-new-%")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
}
