package app_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// traffic publishes a binary batch of 20 records tagged tag every 10ms on
// its own connection until the returned stop is called; stop returns how
// many records were published.
func (e *env) traffic(tag uint16) (stop func() int) {
	e.t.Helper()
	ch := testenv.Channel(e.t, e.url)
	var sent atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var enc record.Encoder
		k := 0
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			now := time.Now().UnixNano()
			enc.Reset(now)
			for range 20 {
				k++
				r := record.Record{TS: now, Src: netip.AddrFrom4([4]byte{10, 7, byte(k >> 8), byte(k)}), Dst: netip.MustParseAddr("192.0.2.1"),
					SrcPort: uint16(k), DstPort: tag, Flags: record.FlagSYN, IPLen: 60}
				enc.Add(&r)
			}
			dc, err := ch.PublishWithDeferredConfirm(topology.RecordsExchange, "", false, false, amqp.Publishing{ContentType: record.ContentTypeBinary,
				Headers: amqp.Table{record.VersionHeader: int32(record.Version)}, DeliveryMode: amqp.Persistent, Body: enc.Bytes()})
			if err != nil || !dc.Wait() {
				e.t.Errorf("publish traffic: %v", err)
				return
			}
			sent.Add(20)
		}
	})
	return func() int {
		close(done)
		wg.Wait()
		return int(sent.Load())
	}
}

// Must-show 5: a Redis instance added through the control log while
// records flow receives records within a second of every consumer applying
// the change, with no restart.
func TestAddBackendUnderTraffic(t *testing.T) {
	e := newEnv(t)
	c := testenv.Redis(t, 3)[2]
	e.allow = strings.Join(testenv.Redis(t, 3), ",") // redis-c's port too
	cs := []*running{e.run("c1"), e.run("c2")}
	stop := e.traffic(5)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	if n := e.countOn(c, 5); n != 0 {
		t.Fatalf("redis-c holds %d records before it was added", n)
	}
	e.control(fmt.Sprintf(`{"op":"add_backend","backend":{"name":"redis-c","addr":%q,"weight":100},"id":"t-add"}`, c))
	e.eventually(10*time.Second, "every consumer at version 1", func() bool {
		for _, r := range cs {
			if metric(t, r.MetricsAddr(), "connpipe_consumer_control_version") != 1 {
				return false
			}
		}
		return true
	})
	applied := time.Now()
	e.eventually(5*time.Second, "records on redis-c", func() bool { return e.countOn(c, 5) > 0 })
	lag := time.Since(applied)
	t.Logf("redis-c stored its first record %v after every consumer applied the change", lag.Round(time.Millisecond))
	if lag > time.Second {
		t.Fatalf("redis-c took %v to receive records, want < 1s", lag)
	}
	sent := stop()
	stop = nil
	e.eventually(20*time.Second, "every record stored", func() bool {
		a, b := e.stored(5)
		return a+b+e.countOn(c, 5) >= sent
	})
	a, b := e.stored(5)
	if got := a + b + e.countOn(c, 5); got != sent {
		t.Fatalf("%d records stored, %d published", got, sent)
	}
}

// Must-show 2: with sticky routing, keys from 500 source IPs stay on one
// instance across a weight change and a consumer restart, with three
// consumers competing for the records.
func TestStickyThreeConsumers(t *testing.T) {
	for _, mode := range []string{"weighted", "hash"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			e.control(fmt.Sprintf(`{"op":"set_mode","mode":%q,"hash_key":"src","sticky":true}`, mode))
			cs := []*running{e.run("c1"), e.run("c2"), e.run("c3")}
			const sources, rounds = 500, 6
			round := func(r int) {
				rs := make([]record.Record, sources)
				now := time.Now().UnixNano()
				for k := range rs {
					rs[k] = record.Record{TS: now, Src: netip.AddrFrom4([4]byte{10, 6, byte(k >> 8), byte(k)}), Dst: netip.MustParseAddr("192.0.2.1"),
						SrcPort: uint16(1000 + r), DstPort: 6, Flags: record.FlagSYN, IPLen: 60}
				}
				e.publishBinary(rs, 25)
			}
			for r := range rounds {
				switch r {
				case 2:
					e.control(`{"op":"set_weights","weights":{"redis-a":90,"redis-b":10}}`)
					e.eventually(10*time.Second, "every consumer at version 2", func() bool {
						for _, c := range cs {
							if metric(t, c.MetricsAddr(), "connpipe_consumer_control_version") != 2 {
								return false
							}
						}
						return true
					})
				case 4:
					cs[1].stop(t)
					cs[1] = e.run("c2-restarted")
				}
				round(r)
			}
			e.waitStored(6, sources*rounds)
			by := map[netip.Addr]map[string]int{}
			for i, addr := range e.addrs {
				rdb := redis.NewClient(&redis.Options{Addr: addr})
				err := e.layout.Read(context.Background(), rdb, e.start.Unix()-2, time.Now().Unix()+2, store.Filter{}, func(r *record.Record) {
					if r.DstPort != 6 {
						return
					}
					if by[r.Src] == nil {
						by[r.Src] = map[string]int{}
					}
					by[r.Src][[]string{"redis-a", "redis-b"}[i]]++
				})
				rdb.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			if len(by) != sources {
				t.Fatalf("%d sources stored, want %d", len(by), sources)
			}
			onA := 0
			for src, m := range by {
				if len(m) != 1 {
					t.Fatalf("source %s split over instances: %v", src, m)
				}
				if m["redis-a"] > 0 {
					onA++
				}
			}
			t.Logf("%d of %d sources on redis-a (landed at 30/70, then weights 90/10)", onA, sources)
			// They landed at 30/70: about 150 on redis-a, far from the 450
			// that routing by the new weights would give.
			if onA < 100 || onA > 200 {
				t.Fatalf("%d of %d sources on redis-a, want about 150 (their first landing at 30/70)", onA, sources)
			}
		})
	}
}
