package members

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/topology"
)

// Counters the listener reports to; nil fields are not counted.
type Counters struct {
	Received func() // a heartbeat was folded into the membership
	Invalid  func() // a message on the heartbeat exchange did not parse
}

// Listener feeds the heartbeats published on topology.HeartbeatExchange
// into a Set, through a server-named exclusive auto-delete queue bound to
// the exchange. It runs under a broker.Session, which dials again after a
// lost connection.
type Listener struct {
	URL      string
	Name     string // connection name shown by RabbitMQ
	Set      *Set
	Log      *slog.Logger
	Counters Counters
	// Bound is called (may be nil) each time the queue is bound and
	// consuming: heartbeats published from then on will be seen.
	Bound func()

	sess broker.Session
}

// Broker is the state of the listener's broker session.
func (l *Listener) Broker() broker.Status { return l.sess.Status() }

// Run listens until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	l.sess.URL, l.sess.Name, l.sess.Log = l.URL, l.Name, l.Log
	return l.sess.Run(ctx, l.consume)
}

func (l *Listener) consume(ctx context.Context, conn *broker.Conn) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("declare heartbeat queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, "", topology.HeartbeatExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to %q: %w", q.Name, topology.HeartbeatExchange, err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %q: %w", q.Name, err)
	}
	conn.Ready()
	if l.Bound != nil {
		l.Bound()
	}
	l.Log.Info("listening for consumer heartbeats", "queue", q.Name)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-conn.Closed():
			return conn.Err()
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("heartbeat deliveries closed")
			}
			l.handle(d.Body)
		}
	}
}

func (l *Listener) handle(body []byte) {
	hb, err := heartbeat.Decode(body)
	if err != nil {
		if l.Counters.Invalid != nil {
			l.Counters.Invalid()
		}
		l.Log.Warn("ignoring bad heartbeat", "err", err)
		return
	}
	l.Set.Observe(hb)
	if l.Counters.Received != nil {
		l.Counters.Received()
	}
}
