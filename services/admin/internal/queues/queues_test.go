package queues

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestDepths(t *testing.T) {
	url := testenv.AMQP(t)
	ctx := testenv.Context(t, 30*time.Second)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	p := &Prober{URL: url, Name: "queues test", Now: clk.Now}
	t.Cleanup(func() { p.Close() })

	// Before anyone declared the topology: a clear error, then recovery.
	if _, err := p.Depths(ctx); err == nil || !strings.Contains(err.Error(), "conn.records") {
		t.Fatalf("before the topology exists: err = %v, want one naming conn.records", err)
	}

	ch := testenv.Channel(t, url)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	publish := func(exchange string, n int) {
		t.Helper()
		for range n {
			testenv.Publish(t, ch, exchange, "", amqp.Publishing{Body: []byte("x")})
		}
	}
	publish(topology.RecordsExchange, 3)
	publish(topology.DeadExchange, 2)

	// Within the interval the earlier answer stands.
	if _, err := p.Depths(ctx); err == nil {
		t.Fatal("within the interval: want the cached error")
	}
	clk.Advance(time.Second)
	d, err := p.Depths(ctx)
	if err != nil {
		t.Fatalf("depths: %v", err)
	}
	want := Depths{Queue: topology.RecordsQueue, Ready: 3, Consumers: 0, DeadQueue: topology.DeadQueue, Dead: 2}
	if d != want {
		t.Fatalf("depths = %+v, want %+v", d, want)
	}

	// A consumer attached shows, and taken messages leave the count.
	if _, err := ch.Consume(topology.RecordsQueue, "", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		clk.Advance(time.Second)
		d, err = p.Depths(ctx)
		if err == nil && d.Consumers == 1 && d.Ready == 0 && d.Dead == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after consuming: depths %+v, err %v; want 1 consumer, 0 ready, 2 dead", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUnreachable(t *testing.T) {
	p := &Prober{URL: "amqp://guest:guest@127.0.0.1:1/", Timeout: 500 * time.Millisecond}
	_, err := p.Depths(context.Background())
	if err == nil || !strings.Contains(err.Error(), "connect to rabbitmq") {
		t.Fatalf("err = %v, want a connect error", err)
	}
}
