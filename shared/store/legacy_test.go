package store

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

// A second written both by a consumer of the previous release (32 lists
// named without their count, counted in n:) and by this one, split
// otherwise, reads back whole and counts right, by source too.
func TestPreviousReleaseListsRead(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	sec := time.Now().Unix() - 5
	recs := make([]record.Record, 400)
	for i := range recs {
		recs[i] = record.Record{TS: time.Unix(sec, int64(i)*1000).UnixNano(), Src: netip.MustParseAddr(fmt.Sprintf("10.9.%d.%d", i/200, i%200+1)),
			Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: 1000, DstPort: 80, IPLen: 60}
	}
	// The previous release: one chunk a shard of 32, its own counter.
	old := map[int]*chunk{}
	for i := range recs[:200] {
		k := chunkKeyOf(sec, &recs[i], legacyShardBits)
		c, ok := old[k.shard]
		if !ok {
			c = &chunk{key: k}
			c.start(&recs[i])
			old[k.shard] = c
		}
		c.add(&recs[i])
	}
	for shard, c := range old {
		rdb.RPush(ctx, l.legacyChunkKey(sec, shard), c.buf)
	}
	rdb.IncrBy(ctx, l.legacyCountKey(sec), 200)
	// This release, knowing the second before held few records: 1 list.
	b := NewBuckets()
	b.learn(sec-1, 16*100)
	for i := range recs[200:] {
		b.Add(sec, &recs[200+i])
	}
	if _, err := l.Write(ctx, rdb, b); err != nil {
		t.Fatal(err)
	}
	if v, _ := rdb.Get(ctx, l.CountKey(sec)).Int64(); v%16 != 0 {
		t.Fatalf("split %d, want 0 (one list)", v%16)
	}
	n, _, err := l.Count(ctx, rdb, sec, sec)
	if err != nil || n != 400 {
		t.Fatalf("count %d (%v), want 400", n, err)
	}
	seen := 0
	if err := l.Read(ctx, rdb, sec, sec, Filter{}, func(*record.Record) { seen++ }); err != nil || seen != 400 {
		t.Fatalf("read %d (%v), want 400", seen, err)
	}
	for _, i := range []int{7, 307} {
		got := 0
		err := l.Read(ctx, rdb, sec, sec, Filter{Src: recs[i].Src.String()}, func(r *record.Record) {
			if *r == recs[i] {
				got++
			}
		})
		if err != nil || got != 1 {
			t.Fatalf("source %s: %d (%v), want 1", recs[i].Src, got, err)
		}
	}
}
