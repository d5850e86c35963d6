package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

func batchOf(n int, base int64) []record.Record {
	out := make([]record.Record, n)
	for i := range out {
		out[i] = rec(base+int64(i)*1000, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
	}
	return out
}

// A batch written twice is stored once: the second write finds the
// records marked, writes nothing and says which records the instance
// holds; the part that was missing is then written.
func TestMarkedWriteIsStoredOnce(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	now := time.Now()
	id := record.ID{Producer: 0xfeed, Seq: 7}
	recs := batchOf(20, now.UnixNano())
	write := func(idx ...int) []store.Held {
		b := store.NewBuckets()
		for _, i := range idx {
			b.AddMarked(store.Bucket(recs[i].TS, 0, 0), &recs[i], id, i, len(recs))
		}
		held, err := l.Write(ctx, rdb, b)
		if err != nil {
			t.Fatal(err)
		}
		return held
	}
	first := make([]int, 0, 10)
	for i := 0; i < 20; i += 2 {
		first = append(first, i)
	}
	if held := write(first...); len(held) != 0 {
		t.Fatalf("first write found %v held", held)
	}
	all := make([]int, 20)
	for i := range all {
		all[i] = i
	}
	held := write(all...)
	if len(held) != 1 || held[0].ID != id {
		t.Fatalf("second write: held %+v, want the batch's mark", held)
	}
	var rest []int
	for i := range 20 {
		if held[0].Has(i) != (i%2 == 0) {
			t.Fatalf("mark says record %d held=%v", i, held[0].Has(i))
		}
		if !held[0].Has(i) {
			rest = append(rest, i)
		}
	}
	if held := write(rest...); len(held) != 0 {
		t.Fatalf("write of the missing half found %v", held)
	}
	if held := write(all...); len(held) != 1 {
		t.Fatal("a third delivery was not recognised")
	}
	from, to := now.Unix()-1, now.Unix()+1
	seen := map[string]int{}
	if err := l.Read(ctx, rdb, from, to, store.Filter{}, func(r *record.Record) { seen[r.String()]++ }); err != nil {
		t.Fatal(err)
	}
	n, _, err := l.Count(ctx, rdb, from, to)
	if err != nil || n != 20 || len(seen) != 20 {
		t.Fatalf("count %d (%v), %d distinct read: want 20 and 20", n, err, len(seen))
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s stored %d times", k, c)
		}
	}
	if ttl := rdb.PTTL(ctx, l.MarkKey(id)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("mark PTTL %v, want the retention", ttl)
	}
}

// Admin reads both layouts while v1 buckets live, counts both, and a
// source question reads one shard of layout v2.
func TestBothLayoutsReadAndCounted(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	now := time.Unix(time.Now().Unix(), 5e8)
	recs := batchOf(1000, now.UnixNano())
	v1, v2 := store.NewBuckets(), store.NewBuckets()
	v1.V1 = true
	// A busy second before the window makes the instance split the next
	// ones into 64 lists.
	write(t, l, rdb, v2, spread(now.Unix()-2, 20_000, 3))
	v2.Reset()
	for i := range recs {
		b := v2
		if i%4 == 0 {
			b = v1
		}
		b.Add(store.Bucket(recs[i].TS, 0, 0), &recs[i])
	}
	for _, b := range []*store.Buckets{v1, v2} {
		if _, err := l.Write(ctx, rdb, b); err != nil {
			t.Fatal(err)
		}
	}
	from, to := now.Unix()-1, now.Unix()+1
	all, err := l.Scan(ctx, rdb, from, to, store.Filter{}, func(*record.Record) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := l.Count(ctx, rdb, from, to)
	if err != nil || n != 1000 {
		t.Fatalf("count %d (%v), want 1000", n, err)
	}
	sizes, err := l.Sizes(ctx, rdb, from, to)
	if err != nil {
		t.Fatal(err)
	}
	var v1Bytes int64 // a v1 bucket is read whole whatever the filter
	for _, s := range sizes {
		v1Bytes += s
	}
	for _, i := range []int{0, 1} { // one record in a v1 bucket, one in v2
		src := recs[i].Src.String()
		got := 0
		fetched, err := l.Scan(ctx, rdb, from, to, store.Filter{Src: src}, func(r *record.Record) bool {
			if r.Src.String() != src {
				t.Fatalf("filter %s passed %s", src, r.Src)
			}
			got++
			return true
		})
		if err != nil || got != 1 {
			t.Fatalf("src %s: %d records (%v), want 1", src, got, err)
		}
		t.Logf("src %s: fetched %d of the window's %d bytes (v1 %d)", src, fetched, all, v1Bytes)
		if (fetched-v1Bytes)*8 > all-v1Bytes {
			t.Errorf("a source question fetched %d of %d bytes of layout v2", fetched-v1Bytes, all-v1Bytes)
		}
	}
}

// A read that stops early (a limit reached) fetches little past the
// records it needed: the first round trip asks for one second.
func TestScanStopsEarly(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	now := time.Now().Add(-20 * time.Second)
	b := store.NewBuckets()
	for s := range 10 {
		recs := batchOf(500, now.Add(time.Duration(s)*time.Second).UnixNano())
		for i := range recs {
			b.Add(store.Bucket(recs[i].TS, 0, 0), &recs[i])
		}
	}
	if _, err := l.Write(ctx, rdb, b); err != nil {
		t.Fatal(err)
	}
	from, to := now.Unix()-1, now.Unix()+11
	all, err := l.Scan(ctx, rdb, from, to, store.Filter{}, func(*record.Record) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	some, err := l.Scan(ctx, rdb, from, to, store.Filter{}, func(*record.Record) bool { got++; return got < 3 })
	if err != nil || got != 3 {
		t.Fatalf("stopped after %d records (%v), want 3", got, err)
	}
	if some*5 > all {
		t.Fatalf("a read stopped after 3 records fetched %d of the window's %d bytes", some, all)
	}
}
