// Package queues reads the depth of connpipe's record queues from RabbitMQ
// with passive declares (AMQP queue.declare passive=true): the messages
// ready on conn.records and on its dead-letter queue conn.records.dead, and
// how many consumers conn.records has. No management plugin is needed.
//
// For a quorum queue the count a passive declare returns is the messages
// ready for delivery; those delivered and not yet acked are not in it
// (consumers report their unacked messages in their heartbeats).
package queues

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/recent"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultInterval is the least time between two reads.
const DefaultInterval = recent.DefaultInterval

// Depths is what one read found.
type Depths struct {
	Queue     string `json:"queue"`     // conn.records
	Ready     int    `json:"ready"`     // messages waiting on it
	Consumers int    `json:"consumers"` // consumers attached to it
	DeadQueue string `json:"dead_queue"`
	Dead      int    `json:"dead"` // messages dead-lettered and not yet taken off
}

// Prober reads the depths on its own connection, opened on first use and
// again after a failure. It is safe for concurrent use; reads within the
// interval share one answer.
type Prober struct {
	URL      string
	Name     string        // connection name shown by RabbitMQ
	Interval time.Duration // default DefaultInterval
	Timeout  time.Duration // dial and read; default 2s
	Now      func() time.Time

	last recent.Value[Depths]
	mu   sync.Mutex // guards conn
	conn *amqp.Connection
}

// Depths returns the queue depths, read at most once per interval.
func (p *Prober) Depths(ctx context.Context) (Depths, error) {
	return p.last.Get(ctx, p.Interval, p.Now, p.read)
}

func (p *Prober) read(ctx context.Context) (Depths, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	if p.conn == nil || p.conn.IsClosed() {
		cfg := amqp.Config{Properties: amqp.NewConnectionProperties(), Dial: amqp.DefaultDial(timeout), Heartbeat: 10 * time.Second}
		cfg.Properties.SetClientConnectionName(p.Name)
		conn, _, err := broker.Connect(p.URL, cfg)
		if err != nil {
			return Depths{}, fmt.Errorf("connect to rabbitmq: %w", err)
		}
		p.conn = conn
	}
	type answer struct {
		d   Depths
		err error
	}
	done := make(chan answer, 1)
	conn := p.conn
	go func() {
		d, err := passive(conn)
		done <- answer{d, err}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case a := <-done:
		var amqpErr *amqp.Error
		if a.err != nil && !(errors.As(a.err, &amqpErr) && amqpErr.Code == amqp.NotFound) {
			// Anything but a missing queue may have broken the
			// connection: start with a new one next time.
			p.drop()
		}
		return a.d, a.err
	case <-ctx.Done():
		p.drop()
		return Depths{}, fmt.Errorf("read queue depths: %w", ctx.Err())
	}
}

// passive declares both queues passively, each on a fresh channel (a
// failed passive declare closes its channel).
func passive(conn *amqp.Connection) (Depths, error) {
	d := Depths{Queue: topology.RecordsQueue, DeadQueue: topology.DeadQueue}
	for _, q := range []struct {
		name      string
		ready     *int
		consumers *int
	}{
		{topology.RecordsQueue, &d.Ready, &d.Consumers},
		{topology.DeadQueue, &d.Dead, nil},
	} {
		ch, err := conn.Channel()
		if err != nil {
			return d, fmt.Errorf("open channel: %w", err)
		}
		st, err := ch.QueueDeclarePassive(q.name, true, false, false, false, nil)
		if err != nil {
			return d, fmt.Errorf("queue %q: %w", q.name, err)
		}
		_ = ch.Close()
		*q.ready = st.Messages
		if q.consumers != nil {
			*q.consumers = st.Consumers
		}
	}
	return d, nil
}

func (p *Prober) drop() {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}

// Close closes the connection.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop()
	return nil
}
