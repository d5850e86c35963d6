package app_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/redisproc"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// Must-show 3: a Redis instance stopped under load leaves rotation within
// seconds and its share goes to the other; every confirmed record is
// stored; restarted, it takes its share again.
func TestEjectionUnderLoad(t *testing.T) {
	e := newEnv(t)
	own := redisproc.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	e.addrs[1] = own.Addr // redis-b is ours to kill
	cs := []*running{e.run("c1"), e.run("c2")}
	upOnAll := func(want float64) func() bool {
		return func() bool {
			for _, c := range cs {
				if metric(t, c.MetricsAddr(), `connpipe_consumer_backend_up{backend="redis-b"}`) != want {
					return false
				}
			}
			return true
		}
	}
	stop := e.traffic(7)
	time.Sleep(300 * time.Millisecond)
	own.Kill()
	killed := time.Now()
	e.publishBinary(recs(100, 8), 10)
	e.eventually(5*time.Second, "records published after the kill stored on redis-a", func() bool { return e.countOn(e.addrs[0], 8) == 100 })
	t.Logf("records published after the kill all stored on redis-a %v after it", time.Since(killed).Round(time.Millisecond))
	e.eventually(5*time.Second, "redis-b out of rotation on every consumer", upOnAll(0))
	time.Sleep(300 * time.Millisecond)
	own.Restart()
	e.eventually(10*time.Second, "redis-b back in rotation on every consumer", upOnAll(1))
	sent := stop()

	// Every confirmed record is stored; a duplicate can only come from a
	// write whose outcome the kill made unknown.
	e.eventually(20*time.Second, "every traffic record stored", func() bool {
		a, b := e.stored(7)
		return a+b >= sent
	})
	seen := map[string]int{}
	for _, addr := range e.addrs {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		err := e.layout.Read(context.Background(), rdb, e.start.Unix()-2, time.Now().Unix()+2, store.Filter{}, func(r *record.Record) {
			if r.DstPort == 7 {
				seen[r.String()]++
			}
		})
		rdb.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	a, b := e.stored(7)
	t.Logf("%d records published under load, %d stored (%d on redis-a, %d on redis-b), %d distinct, %d stored twice", sent, a+b, a, b, len(seen), dups)
	if len(seen) != sent {
		t.Fatalf("%d of %d confirmed records stored", len(seen), sent)
	}

	// Back in rotation: it takes its share again (each consumer is exact
	// to within a record, so two are within two of 30/70).
	e.publishBinary(recs(1000, 9), 20)
	ra, rb := e.waitStored(9, 1000)
	if math.Abs(float64(rb)-700) > 2 {
		t.Fatalf("after the restart: %d/%d, want 300/700", ra, rb)
	}
}
