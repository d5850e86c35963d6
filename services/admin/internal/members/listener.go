package members

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Counters the listener reports to; nil fields are not counted.
type Counters struct {
	Received func() // a heartbeat was folded into the membership
	Invalid  func() // a message on the heartbeat exchange did not parse
}

// Listener feeds the heartbeats published on topology.HeartbeatExchange
// into a Set, through a server-named exclusive auto-delete queue bound to
// the exchange. It reconnects with backoff.
type Listener struct {
	URL      string
	Name     string // connection name shown by RabbitMQ
	Set      *Set
	Log      *slog.Logger
	Counters Counters
	// Bound is called (may be nil) each time the queue is bound and
	// consuming: heartbeats published from then on will be seen.
	Bound func()
}

// Run listens until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		conn, err := broker.Dial(ctx, l.URL, l.Name, l.Log)
		if err != nil {
			return err // only when ctx ended
		}
		err = l.consume(ctx, conn)
		conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		d := broker.DefaultBackoff.Delay(min(attempt, 6))
		l.Log.Warn("heartbeat listener lost the broker, reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

func (l *Listener) consume(ctx context.Context, conn *amqp.Connection) error {
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
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if l.Bound != nil {
		l.Bound()
	}
	l.Log.Info("listening for consumer heartbeats", "queue", q.Name)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-closed:
			if e == nil {
				return errors.New("connection closed")
			}
			return e
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("heartbeat deliveries closed")
			}
			l.handle(d.Body)
		}
	}
}

func (l *Listener) handle(body []byte) {
	hb, err := ParseHeartbeat(body)
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

// ParseHeartbeat decodes a heartbeat message. It must name the consumer.
func ParseHeartbeat(body []byte) (control.Heartbeat, error) {
	var hb control.Heartbeat
	if err := json.Unmarshal(body, &hb); err != nil {
		return hb, fmt.Errorf("heartbeat %.80q: %w", body, err)
	}
	if hb.Consumer == "" {
		return hb, fmt.Errorf("heartbeat %.80q: no \"consumer\" id", body)
	}
	return hb, nil
}
