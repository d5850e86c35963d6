package readback

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

func rec(ts time.Time, src, dst string, sport uint16) record.Record {
	return record.Record{
		TS: ts.UnixNano(), Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
		SrcPort: sport, DstPort: 8080, Flags: record.FlagSYN, IPLen: 60,
	}
}

// write stores recs on addr under layout, in their capture-time buckets, and
// deletes those buckets when the test ends.
func write(t *testing.T, pool *redisconn.Pool, layout store.Layout, addr string, recs ...record.Record) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	b := store.NewBuckets()
	from, to := int64(math.MaxInt64), int64(0)
	for i := range recs {
		sec := store.Bucket(recs[i].TS, 0, 0)
		b.Add(sec, &recs[i])
		from, to = min(from, sec), max(to, sec)
	}
	if _, err := layout.Write(ctx, pool.Client(addr), b); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = layout.Purge(context.Background(), pool.Client(addr), from, to) })
}

func TestReadAcrossInstances(t *testing.T) {
	addrs := testenv.Redis(t, 2)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: 5 * time.Minute}
	pool := &redisconn.Pool{}
	t.Cleanup(func() { pool.Close() })
	now := time.Now()
	backends := []control.Backend{{Name: "redis-a", Addr: addrs[0], Weight: 30}, {Name: "redis-b", Addr: addrs[1], Weight: 70}}

	write(t, pool, layout, addrs[0],
		rec(now.Add(-20*time.Second), "10.0.0.7", "10.0.0.1", 1001),
		rec(now.Add(-10*time.Second), "10.0.0.8", "10.0.0.1", 1002),
		rec(now.Add(-2*time.Minute), "10.0.0.7", "10.0.0.1", 1003), // past the window asked
	)
	write(t, pool, layout, addrs[1],
		rec(now.Add(-15*time.Second), "10.0.0.7", "10.0.0.2", 2001),
		rec(now.Add(-5*time.Second), "2001:db8::7", "2001:db8::1", 2002),
		rec(now.Add(-1*time.Second), "10.0.0.7", "10.0.0.1", 2003),
	)
	r := &Searcher{Layout: layout, Client: pool.Cmdable}

	tests := []struct {
		name      string
		q         Query
		ports     []uint16 // source ports expected, in time order
		counts    map[string]int
		truncated bool
	}{
		{"all in the last minute", Query{Since: now.Add(-time.Minute), Until: now}, []uint16{1001, 2001, 1002, 2002, 2003}, map[string]int{"redis-a": 2, "redis-b": 3}, false},
		{"by source", Query{Since: now.Add(-time.Minute), Until: now, Src: "10.0.0.7"}, []uint16{1001, 2001, 2003}, map[string]int{"redis-a": 1, "redis-b": 2}, false},
		{"by destination", Query{Since: now.Add(-time.Minute), Until: now, Dst: "10.0.0.1"}, []uint16{1001, 1002, 2003}, map[string]int{"redis-a": 2, "redis-b": 1}, false},
		{"IPv6 source", Query{Since: now.Add(-time.Minute), Until: now, Src: "2001:db8::7"}, []uint16{2002}, map[string]int{"redis-a": 0, "redis-b": 1}, false},
		{"source and destination", Query{Since: now.Add(-time.Minute), Until: now, Src: "10.0.0.7", Dst: "10.0.0.2"}, []uint16{2001}, map[string]int{"redis-a": 0, "redis-b": 1}, false},
		{"narrow window", Query{Since: now.Add(-12 * time.Second), Until: now.Add(-3 * time.Second)}, []uint16{1002, 2002}, map[string]int{"redis-a": 1, "redis-b": 1}, false},
		{"older record within retention", Query{Since: now.Add(-3 * time.Minute), Until: now.Add(-90 * time.Second)}, []uint16{1003}, map[string]int{"redis-a": 1, "redis-b": 0}, false},
		{"limit", Query{Since: now.Add(-time.Minute), Until: now, Limit: 2}, []uint16{1001, 2001}, map[string]int{"redis-a": 1, "redis-b": 1}, true},
		{"nothing matches", Query{Since: now.Add(-time.Minute), Until: now, Src: "192.0.2.1"}, nil, map[string]int{"redis-a": 0, "redis-b": 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := r.Search(testenv.Context(t, 10*time.Second), backends, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var ports []uint16
			for _, it := range res.Items {
				ports = append(ports, it.Record.SrcPort)
				want := "redis-a"
				if it.Record.SrcPort >= 2000 {
					want = "redis-b"
				}
				if it.Backend != want {
					t.Errorf("record %d from %s, want %s", it.Record.SrcPort, it.Backend, want)
				}
			}
			if !slices.Equal(ports, tt.ports) {
				t.Errorf("source ports = %v, want %v", ports, tt.ports)
			}
			for name, n := range tt.counts {
				if res.CountByBackend[name] != n {
					t.Errorf("count %s = %d, want %d (all: %v)", name, res.CountByBackend[name], n, res.CountByBackend)
				}
			}
			if res.Truncated != tt.truncated {
				t.Errorf("truncated = %v, want %v", res.Truncated, tt.truncated)
			}
			// Count finds as many, with no limit; a plain window from
			// the counters alone.
			c, err := r.Count(testenv.Context(t, 10*time.Second), backends, tt.q)
			if err != nil || len(c.Errors) != 0 {
				t.Fatalf("count: %v %v", err, c.Errors)
			}
			plain := tt.q.Src == "" && tt.q.Dst == "" && tt.q.Key == ""
			for name, n := range tt.counts {
				if !tt.truncated && c.ByBackend[name] != int64(n) {
					t.Errorf("Count %s = %d, want %d", name, c.ByBackend[name], n)
				}
			}
			if c.FromCounters != plain || (plain && c.Fetched > 100) {
				t.Errorf("count from counters %v (fetched %d bytes), want %v", c.FromCounters, c.Fetched, plain)
			}
			if len(res.Errors) != 0 {
				t.Errorf("errors: %v", res.Errors)
			}
		})
	}
}

func TestDeadBackendIsReportedOthersAnswer(t *testing.T) {
	addrs := testenv.Redis(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	pool := &redisconn.Pool{Options: func(addr string) *redis.Options {
		return &redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1}
	}}
	t.Cleanup(func() { pool.Close() })
	now := time.Now()
	write(t, pool, layout, addrs[0], rec(now.Add(-time.Second), "10.0.0.7", "10.0.0.1", 1))
	r := &Searcher{Layout: layout, Client: pool.Cmdable}
	res, err := r.Search(testenv.Context(t, 10*time.Second),
		[]control.Backend{{Name: "up", Addr: addrs[0]}, {Name: "down", Addr: dead}},
		Query{Since: now.Add(-time.Minute), Until: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0].Backend != "up" {
		t.Errorf("items = %+v, want the one record from up", res.Items)
	}
	if res.Errors["down"] == "" || res.Errors["up"] != "" {
		t.Errorf("errors = %v, want one for down only", res.Errors)
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	def := now.Add(time.Hour)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", def, false},
		{"1m", now.Add(-time.Minute), false},
		{"90s", now.Add(-90 * time.Second), false},
		{"2024-05-01T11:58:00Z", now.Add(-2 * time.Minute), false},
		{"1714564680", now.Add(-2 * time.Minute), false},
		{"yesterday", time.Time{}, true},
		{"1m30", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := ParseTime("since", tt.in, now, def)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTime(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Errorf("ParseTime(%q) err %v does not wrap ErrBadQuery", tt.in, err)
			}
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("ParseTime(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""}, {"10.0.0.7", "10.0.0.7"}, {"::ffff:10.0.0.7", "10.0.0.7"}, {"2001:DB8::1", "2001:db8::1"}, {"10.0.0", "!"}, {"host", "!"},
	}
	for _, tt := range tests {
		got, err := ParseIP("src", tt.in)
		if tt.want == "!" {
			if err == nil {
				t.Errorf("ParseIP(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseIP(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestBadQuery(t *testing.T) {
	r := &Searcher{Layout: store.Layout{Retention: time.Minute}, Client: (&redisconn.Pool{}).Cmdable}
	now := time.Now()
	for _, q := range []Query{
		{Since: now, Until: now.Add(-time.Second)},
		{Since: now.Add(-time.Minute), Until: now, Limit: -1},
		{Since: now.Add(-time.Minute), Until: now.Add(30 * 24 * time.Hour)},
	} {
		if _, err := r.Search(context.Background(), nil, q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Search(%+v) err = %v, want ErrBadQuery", q, err)
		}
	}
}

// A record stamped in the year 2100 is stored in the bucket of the second
// the consumer received it (store.Bucket), so the default query of the
// last minutes shows it, with its own timestamp.
func TestFarFutureRecordIsReadBack(t *testing.T) {
	addr := testenv.Redis(t, 1)[0]
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: 5 * time.Minute}
	pool := &redisconn.Pool{}
	t.Cleanup(func() { pool.Close() })
	now := time.Now()
	r := rec(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), "10.0.0.99", "10.0.0.1", 4242)
	b := store.NewBuckets()
	sec := store.Bucket(r.TS, now.UnixNano(), now.UnixNano())
	b.Add(sec, &r)
	ctx := testenv.Context(t, 10*time.Second)
	if _, err := layout.Write(ctx, pool.Client(addr), b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Client(addr).Del(context.Background(), layout.BucketKey(sec)) })
	rd := &Searcher{Layout: layout, Client: pool.Cmdable}
	res, err := rd.Search(ctx, []control.Backend{{Name: "redis-a", Addr: addr, Weight: 1}},
		Query{Since: now.Add(-time.Minute), Until: now.Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0].Record.TS != r.TS {
		t.Fatalf("read %v, want the year-2100 record", res.Items)
	}
}
