package tally

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type env struct {
	t        *testing.T
	layout   store.Layout
	clients  map[string]*redis.Client
	backends []control.Backend
	secs     []int64 // seconds written, deleted at the end
	v1       bool    // write layout v1 buckets (no counters)
}

func newEnv(t *testing.T) *env {
	addrs := testenv.Redis(t, 2)
	e := &env{t: t, layout: store.Layout{Prefix: testenv.Prefix(t), Retention: 5 * time.Minute}, clients: map[string]*redis.Client{}}
	for i, a := range addrs {
		e.clients[a] = redis.NewClient(&redis.Options{Addr: a})
		e.backends = append(e.backends, control.Backend{Name: []string{"redis-a", "redis-b"}[i], Addr: a, Weight: 1})
	}
	t.Cleanup(func() {
		for _, c := range e.clients {
			for _, sec := range e.secs {
				_ = e.layout.Purge(context.Background(), c, sec, sec)
			}
			c.Close()
		}
	})
	return e
}

func (e *env) client(addr string) redis.Cmdable { return e.clients[addr] }

// store writes n records into bucket sec of backend i; v6 makes every
// other one IPv6 and keyed, so entries differ in size.
func (e *env) store(i int, sec int64, n int) {
	e.t.Helper()
	b := store.NewBuckets()
	b.V1 = e.v1
	for j := range n {
		r := record.Record{TS: sec * int64(time.Second), Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: uint16(j), DstPort: 80}
		if j%2 == 1 {
			r.Src, r.Dst, r.Key = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), "flow-key"
		}
		b.Add(sec, &r)
	}
	if _, err := e.layout.Write(context.Background(), e.clients[e.backends[i].Addr], b); err != nil {
		e.t.Fatalf("write: %v", err)
	}
	e.secs = append(e.secs, sec)
}

func TestCountsSharesAndRates(t *testing.T) {
	e := newEnv(t)
	clk := &clock{t: time.Unix(1_800_000_000, 500e6)}
	now := clk.Now().Unix()
	tl := New(Config{Layout: e.layout, Client: e.client, Now: clk.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})

	e.store(0, now-1, 30)   // last complete second
	e.store(1, now-1, 70)   //
	e.store(0, now-10, 3)   // in the share window, not the rate window
	e.store(1, now-10, 7)   //
	e.store(0, now-61, 500) // before the share window, in the history
	e.store(0, now, 1000)   // the second in progress: not counted yet
	e.store(1, now-301, 99) // before the history

	s := tl.Snapshot(context.Background(), e.backends)
	if s.To != now-1 || s.From != now-300 || s.Share != (Window{now - 60, now - 1}) || s.Rate != (Window{now - 5, now - 1}) {
		t.Fatalf("windows: from %d to %d share %+v rate %+v (now %d)", s.From, s.To, s.Share, s.Rate, now)
	}
	a, b := s.Backends[0], s.Backends[1]
	for _, in := range s.Backends {
		if in.Error != "" {
			t.Fatalf("%s: %s", in.Name, in.Error)
		}
		if len(in.Counts) != 300 {
			t.Fatalf("%s: %d counts, want 300", in.Name, len(in.Counts))
		}
	}
	checks := []struct {
		what      string
		got, want float64
	}{
		{"a records", float64(a.Records), 33},
		{"b records", float64(b.Records), 77},
		{"total", float64(s.Total), 110},
		{"a share", a.Share, 33.0 / 110},
		{"b share", b.Share, 77.0 / 110},
		{"a rate", a.Rate, 30.0 / 5},
		{"b rate", b.Rate, 70.0 / 5},
		{"a last count", float64(a.Counts[len(a.Counts)-1]), 30},
		{"a count at now-61", float64(a.Counts[now-61-s.From]), 500},
		{"b first count", float64(b.Counts[0]), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	// Within the interval the snapshot is shared, even if Redis changed.
	e.store(0, now-1, 10)
	clk.Set(clk.Now().Add(400 * time.Millisecond))
	if s2 := tl.Snapshot(context.Background(), e.backends); s2.Backends[0].Records != 33 {
		t.Fatalf("within the interval: records %d, want the cached 33", s2.Backends[0].Records)
	}

	// A second later: the new records are counted from the counters, and
	// no record is read; the second that was in progress is now counted.
	clk.Set(clk.Now().Add(time.Second))
	s3 := tl.Snapshot(context.Background(), e.backends)
	if got := s3.Backends[0].Records; got != 33+10+1000 {
		t.Errorf("after append: a records %d, want %d", got, 33+10+1000)
	}
	if s3.ReadB != 0 {
		t.Errorf("refresh read %d bytes of records, want 0 (counters only)", s3.ReadB)
	}
}

// Seconds of layout v1 (from before an upgrade) have no counters: their
// entries are counted, and a refresh reads only what was appended since
// the last one. Both layouts in one second add up.
func TestCountsLayoutV1Incrementally(t *testing.T) {
	e := newEnv(t)
	clk := &clock{t: time.Unix(1_800_000_300, 500e6)}
	now := clk.Now().Unix()
	tl := New(Config{Layout: e.layout, Client: e.client, Now: clk.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	e.v1 = true
	e.store(0, now-2, 10)
	if got := tl.Snapshot(context.Background(), e.backends).Backends[0].Records; got != 10 {
		t.Fatalf("first refresh: %d records, want 10", got)
	}
	e.store(0, now-2, 1000)
	e.v1 = false
	e.store(0, now-2, 5)
	clk.Set(clk.Now().Add(time.Second))
	s := tl.Snapshot(context.Background(), e.backends)
	if got := s.Backends[0].Records; got != 1015 {
		t.Errorf("after appends: %d records, want 1015", got)
	}
	want := int64(0)
	for j := range 1000 {
		want += map[bool]int64{false: 25, true: 1 + 8 + 32 + 8 + 1 + 8}[j%2 == 1]
	}
	if s.ReadB != want {
		t.Errorf("incremental refresh read %d bytes, want %d (only what was appended)", s.ReadB, want)
	}
}

// A refresh reads at most MaxRead bytes of layout v1 per instance, newest
// seconds first; the next refreshes count the rest.
func TestBackfillWithinTheBudget(t *testing.T) {
	e := newEnv(t)
	clk := &clock{t: time.Unix(1_800_000_200, 0)}
	now := clk.Now().Unix()
	e.v1 = true // the budget bounds what is read of layout v1
	for sec := now - 4; sec <= now-1; sec++ {
		e.store(0, sec, 4) // 2 IPv4 and 2 IPv6 entries: 166 bytes a second
	}
	tl := New(Config{Layout: e.layout, Client: e.client, Now: clk.Now, MaxRead: 2 * 166, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	steps := []struct {
		records int64
		partial bool
	}{{8, true}, {16, false}, {16, false}}
	for i, st := range steps {
		s := tl.Snapshot(context.Background(), e.backends)
		a := s.Backends[0]
		if a.Records != st.records || a.Partial != st.partial {
			t.Fatalf("refresh %d: %d records, partial %v; want %d, %v", i, a.Records, a.Partial, st.records, st.partial)
		}
		if i == 0 && (a.Counts[len(a.Counts)-1] != 4 || a.Counts[len(a.Counts)-3] != 0) {
			t.Fatalf("first refresh should count the newest seconds first: %v", a.Counts[len(a.Counts)-5:])
		}
		clk.Set(clk.Now().Add(time.Second))
	}
}

func TestUnreachableInstanceKeepsItsCounts(t *testing.T) {
	e := newEnv(t)
	clk := &clock{t: time.Unix(1_800_000_100, 0)}
	now := clk.Now().Unix()
	e.store(0, now-2, 4)
	e.store(1, now-2, 6)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { dead.Close() })
	down := false
	tl := New(Config{Layout: e.layout, Now: clk.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Client: func(addr string) redis.Cmdable {
			if down && addr == e.backends[1].Addr {
				return dead
			}
			return e.clients[addr]
		}})
	if s := tl.Snapshot(context.Background(), e.backends); s.Backends[1].Records != 6 || s.Backends[1].Error != "" {
		t.Fatalf("up: %+v", s.Backends[1])
	}
	down = true
	clk.Set(clk.Now().Add(time.Second))
	s := tl.Snapshot(context.Background(), e.backends)
	if s.Backends[1].Error == "" || s.Backends[1].Records != 6 || s.Backends[0].Records != 4 {
		t.Fatalf("down: a %+v, b %+v; want b's error and both counts kept", s.Backends[0].Records, s.Backends[1])
	}
}

// BenchmarkRefresh measures one steady-state refresh: a 5-minute history
// on two instances, each of which stored perSecond new records since the
// last refresh.
func BenchmarkRefresh(b *testing.B) {
	for _, perSecond := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("records_per_s=%d", perSecond), func(b *testing.B) {
			addrs := testenv.Redis(b, 2)
			layout := store.Layout{Prefix: testenv.Prefix(b), Retention: 5 * time.Minute}
			clients := map[string]*redis.Client{}
			var backends []control.Backend
			for i, a := range addrs {
				clients[a] = redis.NewClient(&redis.Options{Addr: a})
				backends = append(backends, control.Backend{Name: []string{"redis-a", "redis-b"}[i], Addr: a, Weight: 1})
			}
			clk := &clock{t: time.Unix(1_800_000_000, 0)}
			tl := New(Config{Layout: layout, Now: clk.Now, Client: func(a string) redis.Cmdable { return clients[a] }})
			batch := store.NewBuckets()
			var keys []string
			defer func() {
				for _, c := range clients {
					if len(keys) > 0 {
						c.Del(context.Background(), keys...)
					}
					c.Close()
				}
			}()
			tl.Snapshot(context.Background(), backends)
			b.ReportAllocs()
			b.ResetTimer()
			var read int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				sec := clk.Now().Unix()
				batch.Reset()
				for j := range perSecond {
					r := record.Record{TS: sec * int64(time.Second), Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: uint16(j)}
					batch.Add(sec, &r)
				}
				if perSecond > 0 {
					for _, c := range clients {
						if _, err := layout.Write(context.Background(), c, batch); err != nil {
							b.Fatal(err)
						}
					}
					keys = append(keys, layout.BucketKey(sec))
				}
				clk.Set(clk.Now().Add(time.Second))
				b.StartTimer()
				s := tl.Snapshot(context.Background(), backends)
				read += s.ReadB
			}
			b.ReportMetric(float64(read)/float64(b.N), "bytes-read/op")
		})
	}
}
