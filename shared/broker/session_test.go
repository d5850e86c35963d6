package broker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/testenv"
)

// testBackoff is short, so a test sees several steps of the schedule.
var testBackoff = broker.Backoff{Min: 20 * time.Millisecond, Max: 160 * time.Millisecond, Reset: 300 * time.Millisecond}

// nominal is the schedule's step n without jitter.
func nominal(b broker.Backoff, n int) time.Duration {
	return min(b.Min<<n, b.Max)
}

// waitLog is a Session's Wait that records each delay with the status the
// session reported while waiting it.
type waitLog struct {
	s     *broker.Session
	waits chan waited
}

type waited struct {
	d  time.Duration
	st broker.Status
}

func (w *waitLog) wait(ctx context.Context, d time.Duration) error {
	w.waits <- waited{d, w.s.Status()}
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(d):
		return nil
	}
}

func newSession(t *testing.T, amqpURL string) (*broker.Session, *waitLog) {
	s := &broker.Session{URL: amqpURL, Name: "session test " + testenv.ID(), Backoff: testBackoff,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w := &waitLog{s: s, waits: make(chan waited, 256)}
	s.Wait = w.wait
	return s, w
}

// checkSchedule takes the next n waits and checks they follow the
// schedule from its start, each while the session was down for reason.
func checkSchedule(t *testing.T, w *waitLog, n int, reason string) {
	t.Helper()
	for i := range n {
		select {
		case got := <-w.waits:
			want := nominal(testBackoff, i)
			if got.d < want*8/10 || got.d > want*12/10 {
				t.Errorf("wait %d: %s, want %s ±20%%", i, got.d, want)
			}
			if got.st.State != broker.StateDown || !strings.Contains(got.st.Reason, reason) {
				t.Errorf("while waiting %d: status %q, want down naming %q", i, got.st, reason)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d waits seen", i, n)
		}
	}
}

// TestSessionThroughAnOutage cuts the network to a real RabbitMQ: the
// session's connection ends with the reason, the session is down while the
// dials fail, on the backoff schedule from its start, and it is up again
// once the broker answers; a second outage gets the same schedule.
func TestSessionThroughAnOutage(t *testing.T) {
	real := testenv.AMQP(t)
	u, _ := url.Parse(real)
	p := testenv.NewProxy(t, u.Host)
	s, w := newSession(t, withHost(t, real, p.Addr))
	ctx, cancel := context.WithCancel(testenv.Context(t, time.Minute))
	defer cancel()

	ready := make(chan struct{}, 8)
	ended := make(chan error, 8)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(ctx context.Context, c *broker.Conn) error {
			ch, err := c.Channel()
			if err != nil {
				return err
			}
			defer ch.Close()
			c.Ready()
			ready <- struct{}{}
			select {
			case <-ctx.Done():
				return nil
			case <-c.Closed():
				ended <- c.Err()
				return c.Err()
			}
		})
	}()

	for sessions := 1; sessions <= 2; sessions++ {
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatalf("session %d never up: %s", sessions, s.Status())
		}
		if st := s.Status(); st.State != broker.StateUp || st.Sessions != sessions {
			t.Fatalf("status %+v, want up for session %d", st, sessions)
		}
		// Up for longer than Reset: the schedule after it starts afresh.
		time.Sleep(testBackoff.Reset + 100*time.Millisecond)
		if len(w.waits) != 0 {
			t.Fatalf("the session waited while it was up")
		}
		p.Cut()
		if err := <-ended; err == nil || !strings.HasPrefix(err.Error(), "connection closed") {
			t.Errorf("the work saw the connection end with %v, want connection closed", err)
		}
		checkSchedule(t, w, 6, "connection refused")
		p.Restore(t)
	}
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("never up after the second outage: %s", s.Status())
	}
	for len(w.waits) > 0 {
		<-w.waits // the steps waited before the restore took
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after the work returned nil: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	if st := s.Status(); st.State != broker.StateDown || st.Sessions != 3 {
		t.Errorf("after Run: %+v, want down after 3 sessions", st)
	}
}

// TestSessionBacksOffAShortSession: work that fails as soon as it starts
// (a refused consume, say) is not retried at once but on the schedule,
// which grows with each failure in a row; Run returns when ctx ends.
func TestSessionBacksOffAShortSession(t *testing.T) {
	s, w := newSession(t, testenv.AMQP(t))
	ctx, cancel := context.WithCancel(testenv.Context(t, time.Minute))
	refused := errors.New("refused by the test")
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(ctx context.Context, c *broker.Conn) error {
			c.Ready()
			return refused
		})
	}()
	checkSchedule(t, w, 5, refused.Error())
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := s.Status(); st.State != broker.StateDown || st.Sessions < 5 {
		t.Errorf("after Run: %+v, want down after at least 5 sessions", st)
	}
}

// TestSessionRefusesABadURL: a URL that names no node fails at once.
func TestSessionRefusesABadURL(t *testing.T) {
	s := &broker.Session{URL: "http://u:secret@a/"}
	err := s.Run(context.Background(), func(context.Context, *broker.Conn) error { return nil })
	if err == nil || strings.Contains(err.Error(), "secret") || s.Status().State != broker.StateDown {
		t.Fatalf("Run: %v, status %s; want an error without the password, down", err, s.Status())
	}
}
