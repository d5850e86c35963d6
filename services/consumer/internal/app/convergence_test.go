package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/heartbeat"
)

// positions follows the consumers' heartbeats: the control-log position
// each has applied, as admin's membership sees it.
type positions struct {
	mu      sync.Mutex
	changed *sync.Cond
	pos     map[string]int64
}

func (e *env) positions() *positions {
	e.t.Helper()
	ds := e.heartbeatDeliveries()
	p := &positions{pos: map[string]int64{}}
	p.changed = sync.NewCond(&p.mu)
	go func() {
		for d := range ds {
			var hb heartbeat.Message
			if json.Unmarshal(d.Body, &hb) != nil {
				continue
			}
			p.mu.Lock()
			if hb.Position > p.pos[hb.Consumer] {
				p.pos[hb.Consumer] = hb.Position
			}
			p.changed.Broadcast()
			p.mu.Unlock()
		}
	}()
	return p
}

// waitAll blocks until every consumer in ids reports a position >= pos.
func (p *positions) waitAll(ids []string, pos int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		ok := true
		for _, id := range ids {
			if p.pos[id] < pos {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		p.changed.Wait()
	}
}

// BenchmarkConvergence (must-show 4): four consumers; each iteration
// publishes one weight change through the control log the way admin does
// (controllog.Reader.Publish returns once admin's own fold gave its
// verdict) and measures from that return until every consumer has reported,
// by heartbeat, that it applied the change. Reports p50 and p99. Run with
// -benchtime 100x for 100 changes.
func BenchmarkConvergence(b *testing.B) {
	e := newEnv(b)
	p := e.positions()
	var ids []string
	for i := range 4 {
		id := fmt.Sprintf("conv-%d", i)
		e.run(id)
		ids = append(ids, id)
	}
	initial, err := control.NewTable([]control.Backend{{Name: "redis-a", Addr: e.addrs[0], Weight: 30}, {Name: "redis-b", Addr: e.addrs[1], Weight: 70}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := controllog.New(controllog.Config{URL: e.url, Name: "bench admin", Initial: initial, Logger: logger(b)})
	go admin.Run(ctx)
	select {
	case <-admin.Ready():
	case <-time.After(20 * time.Second):
		b.Fatal("control log not read")
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		w := 1 + i%200
		res, _, err := admin.Publish(ctx, control.Message{Op: control.OpSetWeights, Weights: map[string]int{"redis-a": w}, ID: fmt.Sprintf("bench-%d", i)})
		if err != nil || res.Err != nil {
			b.Fatalf("change %d: %v %v", i, err, res.Err)
		}
		returned := time.Now()
		done := make(chan struct{})
		go func() { p.waitAll(ids, res.Position); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			b.Fatalf("change %d at position %d: not every consumer applied it in 10s", i, res.Position)
		}
		lat = append(lat, time.Since(returned))
	}
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
