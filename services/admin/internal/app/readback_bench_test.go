package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// BenchmarkReadBack fills a 5-minute window of N records (3 M and 30 M:
// a window at 10,000 and 100,000 records/s) into the two test Redis
// instances, 30/70, as consumers write them (rounds of 8 batches of 512,
// with their marks), and times the questions an operator asks through
// admin's HTTP API (a source's records over 15 minutes, the first 10 to a
// destination, how many in all, the last 10 seconds' records), reporting
// the bytes each fetched from Redis and, as
// the floor to compare with, the time Redis alone takes to hand over the
// lists a source question reads (pipelined LRANGE, nothing decoded). It
// also reports Redis memory per record (MEMORY USAGE of every key under
// the prefix). CONNPIPE_BENCH_WINDOWS=3000000 runs one size.
func BenchmarkReadBack(b *testing.B) {
	sizes := []int{3_000_000, 30_000_000}
	if v, err := strconv.Atoi(os.Getenv("CONNPIPE_BENCH_WINDOWS")); err == nil && v > 0 {
		sizes = []int{v}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("records=%dM", n/1_000_000), func(b *testing.B) {
			e := apptest.Start(b, func(c *app.Config) { c.Retention = 20 * time.Minute })
			clients := []*redis.Client{redis.NewClient(&redis.Options{Addr: e.Backends[0].Addr}), redis.NewClient(&redis.Options{Addr: e.Backends[1].Addr})}
			b.Cleanup(func() {
				for _, c := range clients {
					dropPrefix(b, c, e.Layout.Prefix)
					c.Close()
				}
			})
			t0 := time.Now()
			src, end := fillWindow(b, e.Layout, clients, n)
			b.Logf("filled %d records in %s; %.2f bytes of Redis per record", n, time.Since(t0).Round(time.Millisecond), bytesPerRecord(b, clients, e.Layout.Prefix, n))
			for _, q := range []struct{ name, query string }{
				{"src", "since=15m&src=" + src},
				{"dst-limit-10", "since=15m&dst=192.0.2.1&limit=10"},
				{"count", "since=15m&count=true"},
				{"last-10s", fmt.Sprintf("since=%d&until=%d&limit=100000", end.Unix()-10, end.Unix())},
			} {
				b.Run(q.name, func(b *testing.B) {
					var fetched int64
					for b.Loop() {
						fetched = ask(b, e, q.query)
					}
					b.ReportMetric(float64(fetched), "bytes-fetched/op")
				})
			}
			b.Run("redis-floor-src", func(b *testing.B) {
				for b.Loop() {
					rawFetch(b, clients, e.Layout, netip.MustParseAddr(src))
				}
			})
		})
	}
}

// ask GETs the records API and returns the bytes it says it fetched.
func ask(b *testing.B, e *apptest.Env, query string) int64 {
	a := e.Read(b, "/api/v1/records?"+query)
	if a.Code != http.StatusOK {
		b.Fatalf("records?%s: %d %s", query, a.Code, a.Body)
	}
	var res struct {
		BytesFetched int64 `json:"bytes_fetched"`
		Total        int64 `json:"total"`
	}
	a.Decode(b, &res)
	return res.BytesFetched
}

// benchSource is source k of the 65,536 the window's records come from.
func benchSource(k uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 1, byte(k >> 8), byte(k)})
}

// fillWindow writes n records over the last 300 s, from 65,536 sources to
// 192.0.2.1:443, 30/70 over the two instances, and returns a source that
// the window holds and the window's end.
func fillWindow(b testing.TB, l store.Layout, clients []*redis.Client, n int) (string, time.Time) {
	const batch, round, workers = 512, 8, 4
	end := time.Now()
	step := int64(300*time.Second) / int64(n)
	base := end.UnixNano() - int64(n)*step
	rounds := (n + batch*round - 1) / (batch * round)
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			bk := []*store.Buckets{store.NewBuckets(), store.NewBuckets()}
			// Rounds are taken in order, as consumers take messages
			// from one queue: a few rounds in flight at once.
			for r := int(next.Add(1) - 1); r < rounds; r = int(next.Add(1) - 1) {
				for _, x := range bk {
					x.Reset()
				}
				for j := range round {
					first := (r*round + j) * batch
					id := record.ID{Producer: 0xbe7c4, Seq: uint64(first/batch + 1)}
					for i := range min(batch, n-first) {
						p := first + i
						h := uint32(p) * 2654435761
						rec := record.Record{TS: base + int64(p)*step, Src: benchSource(h >> 16), Dst: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
							SrcPort: uint16(h), DstPort: 443, Flags: record.FlagSYN, IPLen: 60}
						to := 1
						if p%10 < 3 {
							to = 0
						}
						bk[to].AddMarked(store.Bucket(rec.TS, rec.TS, 0), &rec, id, i, batch)
					}
				}
				for k, x := range bk {
					if _, err := l.Write(context.Background(), clients[k], x); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("fill: %v", err)
	}
	return benchSource(uint32(n/2) * 2654435761 >> 16).String(), end
}

// rawFetch fetches, without decoding, the lists a question about src
// reads: one per second of the window per instance.
func rawFetch(b *testing.B, clients []*redis.Client, l store.Layout, src netip.Addr) {
	now := time.Now().Unix()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			keys, err := l.ListKeys(context.Background(), c, now-15*60, now, store.Filter{Src: src.String()})
			if err != nil {
				b.Error(err)
				return
			}
			_, err = c.Pipelined(context.Background(), func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.LRange(context.Background(), k, 0, -1)
				}
				return nil
			})
			if err != nil && err != redis.Nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}

// bytesPerRecord is MEMORY USAGE of every key under prefix over n.
func bytesPerRecord(b *testing.B, clients []*redis.Client, prefix string, n int) float64 {
	var total int64
	ctx := context.Background()
	for _, c := range clients {
		keys := scanKeys(b, c, prefix)
		for len(keys) > 0 {
			part := keys[:min(len(keys), 5000)]
			keys = keys[len(part):]
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range part {
					p.MemoryUsage(ctx, k, 0)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			for _, cmd := range cmds {
				total += cmd.(*redis.IntCmd).Val()
			}
		}
	}
	return float64(total) / float64(n)
}

func scanKeys(b testing.TB, c *redis.Client, prefix string) []string {
	var keys []string
	iter := c.Scan(context.Background(), 0, prefix+"*", 10000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	return keys
}

// dropPrefix unlinks every key under prefix.
func dropPrefix(b testing.TB, c *redis.Client, prefix string) {
	keys := scanKeys(b, c, prefix)
	for len(keys) > 0 {
		part := keys[:min(len(keys), 5000)]
		keys = keys[len(part):]
		c.Unlink(context.Background(), part...)
	}
}
