package store_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

func rec(ts int64, src string) record.Record {
	return record.Record{TS: ts, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("127.0.0.1"),
		SrcPort: 40000, DstPort: 7000, Flags: record.FlagSYN, IPLen: 60}
}

func TestWriteReadAndFilter(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	now := time.Now()
	b := store.NewBuckets()
	srcs := []string{"127.0.0.2", "127.0.0.3", "::1"}
	for i := range 300 {
		r := rec(now.Add(-time.Duration(i)*10*time.Millisecond).UnixNano(), srcs[i%3])
		if srcs[i%3] == "::1" {
			r.Dst = netip.MustParseAddr("::1")
		}
		b.Add(store.Bucket(r.TS, 0, 0), &r)
	}
	if _, err := l.Write(ctx, rdb, b); err != nil {
		t.Fatal(err)
	}
	count := func(f store.Filter) int {
		n := 0
		err := l.Read(ctx, rdb, now.Add(-10*time.Second).Unix(), now.Unix(), f, func(*record.Record) { n++ })
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(store.Filter{}); n != 300 {
		t.Fatalf("read %d records, wrote 300", n)
	}
	if n := count(store.Filter{Src: "127.0.0.3"}); n != 100 {
		t.Fatalf("src filter: %d, want 100", n)
	}
	if n := count(store.Filter{Dst: "::1"}); n != 100 {
		t.Fatalf("dst filter: %d, want 100", n)
	}
	// Every bucket has its expiry.
	keys, err := rdb.Keys(ctx, l.Prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	for _, k := range keys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > 62*time.Second {
			t.Errorf("%s: ttl %v, want (0, 62s]", k, ttl)
		}
	}
}

func TestRetentionIsPreciseToASecond(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	const retention = 3 * time.Second
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: retention}
	r := rec(time.Now().UnixNano(), "127.0.0.9")
	b := store.NewBuckets()
	sec := store.Bucket(r.TS, 0, 0)
	b.Add(sec, &r)
	if _, err := l.Write(ctx, rdb, b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Unix(0, r.TS).Add(retention)
	readable := func() bool {
		n := 0
		if err := l.Read(ctx, rdb, sec, sec, store.Filter{}, func(*record.Record) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	// Readable right up to the deadline.
	for time.Until(deadline) > 50*time.Millisecond {
		if !readable() {
			t.Fatalf("record gone %v before its deadline", time.Until(deadline))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Gone within one second after it.
	for readable() {
		if late := time.Since(deadline); late > time.Second {
			t.Fatalf("record still readable %v after its deadline", late)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("gone %v after the deadline", time.Since(deadline).Round(time.Millisecond))
}

func TestReplayedRecordsCountFromIngest(t *testing.T) {
	old := time.Date(2009, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	ingest := time.Now().UnixNano()
	if got := store.Bucket(old, ingest, 0); got != ingest/1e9 {
		t.Fatalf("old capture replayed now lands in bucket %d, want %d", got, ingest/1e9)
	}
	if got := store.Bucket(ingest+2e9, ingest, 0); got != (ingest+2e9)/1e9 {
		t.Fatalf("live record lands in bucket %d", got)
	}
}

func TestBucketNeverAfterReceipt(t *testing.T) {
	recv := time.Date(2026, 6, 1, 12, 0, 0, 700e6, time.UTC).UnixNano()
	y2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	cases := []struct {
		name             string
		ts, ingest, recv int64
		want             int64
	}{
		{"live: capture time", recv - 30e6, recv - 80e6, recv, (recv - 30e6) / 1e9},
		{"year 2100 record", y2100, recv - 1e9, recv, recv / 1e9},
		{"year 2100 ingest too", y2100, y2100, recv, recv / 1e9},
		{"replayed old capture", 1e9, recv - 1e9, recv, (recv - 1e9) / 1e9},
		{"receipt unknown", y2100, 0, 0, y2100 / 1e9},
	}
	for _, c := range cases {
		if got := store.Bucket(c.ts, c.ingest, c.recv); got != c.want {
			t.Errorf("%s: bucket %d, want %d", c.name, got, c.want)
		}
	}
}

// A record stamped in the year 2100 is stored in the bucket of the second
// it was received: its key expires within RETENTION + 1 s, and a read of
// the last RETENTION finds it.
func TestFarFutureRecordExpiresWithinRetention(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	const retention = 5 * time.Minute
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: retention}
	recv := time.Now()
	r := rec(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), "127.0.0.21")
	b := store.NewBuckets()
	b.Add(store.Bucket(r.TS, 0, recv.UnixNano()), &r)
	if _, err := l.Write(ctx, rdb, b); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, l.Prefix+"*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v, err %v: want one list and its counter", keys, err)
	}
	for _, k := range keys {
		ttl := rdb.PTTL(ctx, k).Val()
		t.Logf("year-2100 record: key %s, PTTL %v (retention %v)", k, ttl, retention)
		if ttl <= 0 || ttl > retention+time.Second {
			t.Fatalf("%s: PTTL %v, want (0, %v]", k, ttl, retention+time.Second)
		}
	}
	n := 0
	err = l.Read(ctx, rdb, recv.Add(-retention).Unix(), time.Now().Unix(), store.Filter{}, func(got *record.Record) {
		if got.TS == r.TS {
			n++
		}
	})
	if err != nil || n != 1 {
		t.Fatalf("read of the last %v found %d year-2100 records (err %v), want 1", retention, n, err)
	}
}

func TestStickKey(t *testing.T) {
	l := store.Layout{Prefix: "cp:"}
	for _, c := range []struct {
		h    uint64
		want string
	}{
		{0, "cp:stick:src:0000000000000000"},
		{0xabc, "cp:stick:src:0000000000000abc"},
		{^uint64(0), "cp:stick:src:ffffffffffffffff"},
	} {
		if got := l.StickKey("src", c.h); got != c.want {
			t.Errorf("StickKey(%x) = %s, want %s", c.h, got, c.want)
		}
	}
}

// Sizes and ReadSpans read only what a layout v1 bucket gained since the last look:
// the entries appended after a first read, and nothing for a bucket that
// did not grow.
func TestSizesAndSpans(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	l := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	sec := time.Now().Unix()
	write := func(s int64, n int) {
		b := store.NewBuckets()
		b.V1 = true
		for range n {
			r := rec(s*int64(time.Second), "127.0.0.5")
			b.Add(s, &r)
		}
		if _, err := l.Write(ctx, rdb, b); err != nil {
			t.Fatal(err)
		}
	}
	write(sec, 3)
	write(sec+1, 2)
	first, err := l.Sizes(ctx, rdb, sec-1, sec+1)
	if err != nil {
		t.Fatal(err)
	}
	if first[0] != 0 || first[1] == 0 || first[2] == 0 {
		t.Fatalf("sizes %v: want the missing bucket 0 and two others", first)
	}
	write(sec, 4)
	now, err := l.Sizes(ctx, rdb, sec-1, sec+1)
	if err != nil {
		t.Fatal(err)
	}
	var spans []store.Span
	for i := range now {
		if now[i] > first[i] {
			spans = append(spans, store.Span{Sec: sec - 1 + int64(i), From: first[i], To: now[i]})
		}
	}
	if len(spans) != 1 || spans[0].Sec != sec {
		t.Fatalf("grown %v, want only bucket %d", spans, sec)
	}
	var got int64
	err = l.ReadSpans(ctx, rdb, spans, func(sp store.Span, data []byte, entries int64, err error) {
		if err != nil || int64(len(data)) != sp.To-sp.From {
			t.Fatalf("span %+v: %d bytes, %v", sp, len(data), err)
		}
		got += entries
	})
	if err != nil || got != 4 {
		t.Fatalf("read %d entries (%v), want the 4 appended", got, err)
	}
	// A span that starts inside an entry is reported, with what decoded.
	err = l.ReadSpans(ctx, rdb, []store.Span{{Sec: sec, From: 1, To: now[1]}}, func(sp store.Span, _ []byte, _ int64, err error) {
		if err == nil {
			t.Fatalf("span %+v from inside an entry: no error", sp)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
