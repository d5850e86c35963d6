package store_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

func TestShardBits(t *testing.T) {
	for _, c := range []struct {
		n, w int64
		want int
	}{
		{0, 0, 0}, {512, 0, 0}, {513, 0, 1}, {1024, 0, 1}, {3000, 0, 3}, {10_000, 0, 5}, {70_000, 0, 8}, {100_000, 0, 8},
		{1 << 40, 0, store.MaxShardBits},
		// Small writes keep chunks of 16 records or more on average.
		{70_000, 2867, 7}, {1 << 40, 360, 4}, {3000, 31, 0}, {3000, 32, 1}, {3000, 1 << 20, 3},
	} {
		if got := store.ShardBits(c.n, c.w); got != c.want {
			t.Errorf("ShardBits(%d, %d) = %d, want %d", c.n, c.w, got, c.want)
		}
	}
}

// spread returns n records of second sec from n distinct sources.
func spread(sec int64, n, salt int) []record.Record {
	out := make([]record.Record, n)
	base := time.Unix(sec, 0).UnixNano()
	for i := range out {
		out[i] = rec(base+int64(i)*int64(time.Second)/int64(n), fmt.Sprintf("10.%d.%d.%d", salt, i/250, i%250+1))
	}
	return out
}

func write(t *testing.T, l store.Layout, rdb *redis.Client, b *store.Buckets, recs []record.Record) {
	t.Helper()
	b.Reset()
	for i := range recs {
		b.Add(store.Bucket(recs[i].TS, 0, 0), &recs[i])
	}
	if _, err := l.Write(testenv.Context(t, 30*time.Second), rdb, b); err != nil {
		t.Fatal(err)
	}
}

func splitOf(t *testing.T, l store.Layout, rdb *redis.Client, sec int64) int64 {
	t.Helper()
	v, err := rdb.Get(testenv.Context(t, 5*time.Second), l.CountKey(sec)).Int64()
	if err != nil {
		t.Fatalf("counter of second %d: %v", sec, err)
	}
	return v % 16
}

// A second's split follows the records the instance held in the seconds
// before it, and every record reads back by its source from one list.
func TestSplitGrowsWithTheRate(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	sec := time.Now().Unix() - 10
	b := store.NewBuckets()
	rates := []int{3000, 100, 20_000, 20_000, 100, 100, 100, 100}
	for i, n := range rates {
		write(t, l, rdb, b, spread(sec+int64(i), n, i))
	}
	// The first second has nothing before it: one list. Each next one is
	// split by the busiest of the three seconds before it, but into no
	// more lists than leave the writer's last write (the second before's
	// records) 16 records a chunk.
	want := []int64{0, 3, 2, 6, 6, 2, 2, 0}
	for i := range rates {
		if got := splitOf(t, l, rdb, sec+int64(i)); got != want[i] {
			t.Errorf("second %d (+%d): split %d, want %d", sec+int64(i), i, got, want[i])
		}
	}
	n, _, err := l.Count(ctx, rdb, sec, sec+7)
	if err != nil || n != 43_500 {
		t.Fatalf("count %d (%v), want 43500", n, err)
	}
	for i, n := range rates {
		recs := spread(sec+int64(i), n, i)
		src := recs[n/2].Src
		keys, err := l.ListKeys(ctx, rdb, sec, sec+7, store.Filter{Src: src.String()})
		if err != nil || len(keys) != len(rates) {
			t.Fatalf("source %s: lists %v (%v), want one a second", src, keys, err)
		}
		var got []record.Record
		if err := l.Read(ctx, rdb, sec, sec+7, store.Filter{Src: src.String()}, func(r *record.Record) { got = append(got, *r) }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != recs[n/2] {
			t.Fatalf("source %s: read %v, want %v", src, got, recs[n/2])
		}
	}
}

// Two consumers write a second alike although one of them knows nothing
// of the seconds before: the instance splits it, the one that guessed
// wrong learns the split in the answer and makes its write again, so one
// list per second holds each source.
func TestWritersAgreeOnASplit(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	sec := time.Now().Unix() - 10
	a, b := store.NewBuckets(), store.NewBuckets()
	write(t, l, rdb, a, spread(sec-1, 5000, 1)) // a learns that sec-1 holds 5000
	second := spread(sec, 2000, 2)
	write(t, l, rdb, b, second[:1000]) // b knows nothing, guesses one list, learns 16
	write(t, l, rdb, a, second[1000:]) // a guesses 16 lists
	if got, want := splitOf(t, l, rdb, sec), int64(store.ShardBits(5000, 0)); got != want || want == 0 {
		t.Fatalf("split of the second %d, want %d", got, want)
	}
	seen := map[netip.Addr]int{}
	if err := l.Read(ctx, rdb, sec, sec, store.Filter{}, func(r *record.Record) { seen[r.Src]++ }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2000 {
		t.Fatalf("read %d sources of the second, want 2000", len(seen))
	}
	for _, r := range []record.Record{second[10], second[1500]} {
		got := 0
		if err := l.Read(ctx, rdb, sec, sec, store.Filter{Src: r.Src.String()}, func(*record.Record) { got++ }); err != nil || got != 1 {
			t.Fatalf("source %s: %d records (%v), want 1", r.Src, got, err)
		}
	}
}
