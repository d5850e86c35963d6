package members

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/topology"
)

// Counters the listener reports to; nil fields are not counted.
type Counters struct {
	Received func() // a heartbeat was folded into the membership
	// Refused counts a message on the heartbeat exchange that was not
	// folded, by reason: invalid, too_large, too_many_entries (see
	// heartbeat.Reason) or too_many_members.
	Refused func(reason string)
}

// Prefetch bounds the heartbeats delivered and not yet handled, so a
// flood waits in the broker and not in admin's memory.
const Prefetch = 4

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

	sess   broker.Session
	mu     sync.Mutex
	warned map[string]bool // refusal reasons logged at Warn
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
	if err := ch.Qos(Prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(q.Name, "", false, true, false, false, nil)
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
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("ack heartbeat: %w", err)
			}
		}
	}
}

func (l *Listener) handle(body []byte) {
	hb, err := heartbeat.Decode(body)
	reason := ""
	if err != nil {
		reason = heartbeat.Reason(err)
	} else if err = l.Set.Observe(hb); err != nil {
		reason = "too_many_members"
	}
	if err != nil {
		if l.Counters.Refused != nil {
			l.Counters.Refused(reason)
		}
		l.refused(reason, err)
		return
	}
	if l.Counters.Received != nil {
		l.Counters.Received()
	}
}

// refused logs a refused heartbeat: the first of each reason at Warn, the
// rest at Debug (they are counted), so a flood does not flood the log.
func (l *Listener) refused(reason string, err error) {
	l.mu.Lock()
	first := !l.warned[reason]
	if l.warned == nil {
		l.warned = map[string]bool{}
	}
	l.warned[reason] = true
	l.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	l.Log.Log(context.Background(), level, "ignoring heartbeat", "reason", reason, "err", err)
}
