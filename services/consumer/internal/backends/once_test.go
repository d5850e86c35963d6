package backends

import (
	"context"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A batch delivered again — to the same consumer, or to another one, whole
// or as part of another round — is stored once: every record of it once,
// on the instance the first delivery chose, the second delivery's records
// counted as duplicates skipped, and the split still exactly 30/70.
func TestSecondDeliveryStoresNothing(t *testing.T) {
	addrs := testenv.Redis(t, 2)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: 30 * time.Second}
	backends := []control.Backend{{Name: "a", Addr: addrs[0], Weight: 30}, {Name: "b", Addr: addrs[1], Weight: 70}}
	first, other := newSink(t, layout, backends...), newSink(t, layout, backends...)
	now := time.Now()
	batch := func(seq uint64, recs []record.Record) *record.Batch {
		return &record.Batch{ID: record.ID{Producer: 0xabc, Seq: seq}, First: (seq - 1) * 500,
			Ingest: now.UnixNano(), Records: recs}
	}
	b1, b2 := batch(1, gen(0, 500, now.UnixNano(), 7000)), batch(2, gen(500, 500, now.UnixNano(), 7000))
	ctx := context.Background()
	if err := first.Store(ctx, []*record.Batch{b1}); err != nil {
		t.Fatal(err)
	}
	// b1 again to another consumer, in one round with b2; then both again
	// to the first consumer.
	if err := other.Store(ctx, []*record.Batch{b1, b2}); err != nil {
		t.Fatal(err)
	}
	if err := first.Store(ctx, []*record.Batch{b2, b1}); err != nil {
		t.Fatal(err)
	}
	stored := first.Stored() + other.Stored()
	skipped := first.Skipped() + other.Skipped()
	if stored != 1000 || skipped != 1500 {
		t.Fatalf("stored %d and skipped %d, want 1000 and 1500", stored, skipped)
	}
	if got := testutil.ToFloat64(first.m.Duplicates) + testutil.ToFloat64(other.m.Duplicates); got != 1500 {
		t.Fatalf("duplicates metric %v, want 1500", got)
	}
	from, to := now.Unix()-1, now.Unix()+1
	a, b := readAll(t, layout, addrs[0], from, to), readAll(t, layout, addrs[1], from, to)
	all := append(b1.Records, b2.Records...)
	for i := range all {
		k := all[i].String()
		if a[k]+b[k] != 1 {
			t.Fatalf("record %s stored %d times on a and %d on b", k, a[k], b[k])
		}
	}
	if na, nb := countTag(a, all), countTag(b, all); na != 300 || nb != 700 {
		t.Fatalf("split %d/%d, want 300/700", na, nb)
	}
}
