package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// State is where a Session stands.
type State string

// A Session is connecting while it dials and its work opens its channels,
// up once the work says it is ready, and down between a lost connection
// (or a failed dial) and the next dial, and once Run has returned.
const (
	StateConnecting State = "connecting"
	StateUp         State = "up"
	StateDown       State = "down"
)

// Status is a Session's state, for /healthz and status pages.
type Status struct {
	State State
	// Reason is why the last connection ended or the last dial failed;
	// empty before the first failure.
	Reason   string
	Since    time.Time // when State was entered
	Sessions int       // connections that reached up, reconnects included
}

// String is the status in a few words: "up", "down: connection closed: …".
func (st Status) String() string {
	if st.Reason == "" || st.State == StateUp {
		return string(st.State)
	}
	return string(st.State) + ": " + st.Reason
}

// Session keeps one long-lived AMQP user connected. Run dials (as Dial
// does: the nodes of URL in a random order, the topology declared), runs
// the user's work on the connection, and when the connection is lost or
// the work fails, closes it and dials again on Backoff's schedule. Every
// user that lives as long as its process (capture's publisher, the
// consumer's intake, the control log, admin's heartbeat listener) runs
// under one, so a broker outage ends each of their sessions the same way
// and each comes back on the same schedule.
//
// A Session is used by one Run at a time; Status may be read from any
// goroutine.
type Session struct {
	URL     string
	Name    string // connection name, shown in the management UI
	Log     *slog.Logger
	Backoff Backoff // DefaultBackoff if zero
	// Wait waits d before a dial, or until ctx ends (returning its
	// cause). Nil uses a timer; a test may pass one to see the schedule.
	Wait func(ctx context.Context, d time.Duration) error

	status atomic.Pointer[Status]
}

// Conn is one connection of a Session, as its work sees it.
type Conn struct {
	*amqp.Connection
	s      *Session
	closed chan struct{}
	err    error // set before closed is closed
	up     time.Time
}

// Ready tells the session that the work's channels are open: the state
// goes up.
func (c *Conn) Ready() {
	if !c.up.IsZero() {
		return
	}
	c.up = time.Now()
	st := c.s.Status()
	c.s.set(Status{State: StateUp, Reason: st.Reason, Since: c.up, Sessions: st.Sessions + 1})
}

// Closed is closed when the connection is closed, by the broker, the
// network or the session.
func (c *Conn) Closed() <-chan struct{} { return c.closed }

// Err is why the connection closed, once Closed is: what the work returns
// when it sees the connection go.
func (c *Conn) Err() error {
	select {
	case <-c.closed:
		return c.err
	default:
		return nil
	}
}

// Status is the session's state now.
func (s *Session) Status() Status {
	if st := s.status.Load(); st != nil {
		return *st
	}
	return Status{State: StateConnecting}
}

func (s *Session) set(st Status) { s.status.Store(&st) }

// to moves the session to state, keeping the count of sessions.
func (s *Session) to(state State, reason string) {
	st := s.Status()
	s.set(Status{State: state, Reason: reason, Since: time.Now(), Sessions: st.Sessions})
}

// Run runs work on a connection until the work returns nil (the work is
// done) or ctx ends; then it returns nil. It returns an error only for a
// URL that names no node. When the connection closes, the work returns Conn.Err, or any
// error when it fails otherwise; Run then closes the connection and dials
// again: at once if the connection had been up for Backoff.Reset, else
// after Backoff.Delay(n-1), n counting the failures in a row. The work
// must return soon after ctx ends or the connection closes.
func (s *Session) Run(ctx context.Context, work func(ctx context.Context, conn *Conn) error) error {
	b := s.Backoff
	if b == (Backoff{}) {
		b = DefaultBackoff
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := s.Wait
	if wait == nil {
		wait = sleep
	}
	if _, err := Nodes(s.URL); err != nil {
		s.to(StateDown, err.Error())
		return err
	}
	defer s.to(StateDown, "stopped")
	var (
		failures int
		reason   string
	)
	for {
		if failures > 0 {
			d := b.Delay(failures - 1)
			log.Warn("rabbitmq session down, dialling again", "connection", s.Name, "err", reason, "in", d.Round(time.Millisecond))
			if err := wait(ctx, d); err != nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		s.to(StateConnecting, reason)
		amqpConn, err := dialOnce(s.URL, s.Name, log)
		if err != nil {
			failures++
			reason = "dial " + Redact(s.URL) + ": " + err.Error()
			s.to(StateDown, reason)
			continue
		}
		conn := s.watch(amqpConn)
		err = work(ctx, conn)
		_ = amqpConn.Close()
		<-conn.closed
		if lost := conn.err; lost != nil && !errors.Is(lost, errClosedHere) {
			err = lost // the broker or the network ended it: say so the same way for every user
		}
		if err == nil || ctx.Err() != nil {
			return nil
		}
		reason = err.Error()
		s.to(StateDown, reason)
		if !conn.up.IsZero() && time.Since(conn.up) >= b.Reset {
			// A session that lasted dials again at once.
			failures = 0
			log.Warn("rabbitmq session ended, dialling again", "connection", s.Name, "err", reason)
			continue
		}
		failures++
	}
}

// errClosedHere is a Conn's Err after the session closed it itself.
var errClosedHere = errors.New("connection closed by the session")

// watch wraps conn and notes why it closes.
func (s *Session) watch(conn *amqp.Connection) *Conn {
	c := &Conn{Connection: conn, s: s, closed: make(chan struct{})}
	notify := conn.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		defer close(c.closed)
		if e, ok := <-notify; ok && e != nil {
			c.err = fmt.Errorf("connection closed: %w", e)
			return
		}
		c.err = errClosedHere
	}()
	return c
}
