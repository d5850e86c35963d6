// Package members keeps admin's view of the consumers: who is alive, which
// control-log change each one has applied, and how much it has stored.
//
// Consumers publish a heartbeat.Message on the conn.heartbeat exchange at a
// fixed interval and right after they apply a change. A consumer whose last
// heartbeat is older than the timeout (CONSUMER_TIMEOUT) is dead: it leaves
// the membership that convergence is measured against, and is still listed
// (alive=false) until it has been silent for Forget, so an operator sees
// that it went away.
package members

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/heartbeat"
)

// ForgetFactor times the timeout is how long a dead consumer stays listed.
const ForgetFactor = 12

// MaxMembers caps the consumers admin keeps, alive or not. A heartbeat
// from a new id when the set is full takes the place of the consumer
// silent for longest if that one is dead, and is refused
// (ErrTooManyMembers) if every kept consumer is alive.
const MaxMembers = 512

// ErrTooManyMembers is a heartbeat from a new id refused because
// MaxMembers live consumers are kept.
var ErrTooManyMembers = errors.New("too many consumers")

// RateWindow is the span of heartbeats a consumer's records/s is
// measured over.
const RateWindow = 5 * time.Second

// Member is one consumer as last heard of.
type Member struct {
	heartbeat.Message
	LastSeen time.Time // when admin received the last heartbeat
	Alive    bool
	// Rate is records stored per second, from the heartbeats of the last
	// RateWindow (by their sent_at); 0 until two have arrived.
	Rate float64

	samples []sample // recent heartbeats, oldest first; owned by the Set
}

type sample struct {
	at      int64 // sent_at, Unix ns (admin's clock when the consumer sent none)
	records uint64
}

// Set is the membership. It is safe for concurrent use.
type Set struct {
	timeout time.Duration
	forget  time.Duration
	now     func() time.Time

	mu      sync.Mutex
	members map[string]*Member
	changed chan struct{} // closed and replaced on every heartbeat
}

// New returns an empty membership in which a consumer silent for timeout is
// dead. now is the clock (time.Now outside tests).
func New(timeout time.Duration, now func() time.Time) *Set {
	if now == nil {
		now = time.Now
	}
	return &Set{
		timeout: timeout,
		forget:  ForgetFactor * timeout,
		now:     now,
		members: map[string]*Member{},
		changed: make(chan struct{}),
	}
}

// Timeout is the silence after which a consumer is dead.
func (s *Set) Timeout() time.Duration { return s.timeout }

// Observe records a heartbeat received now. It refuses a new consumer
// when MaxMembers live ones are kept.
func (s *Set) Observe(hb heartbeat.Message) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[hb.Consumer]
	if !ok {
		if len(s.members) >= MaxMembers && !s.evictDead(now) {
			return fmt.Errorf("%w: %d alive, at most %d kept", ErrTooManyMembers, len(s.members), MaxMembers)
		}
		m = &Member{}
		s.members[hb.Consumer] = m
	}
	m.Message = hb
	m.LastSeen = now
	m.samples, m.Rate = addSample(m.samples, hb, now)
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// evictDead drops the member silent for longest if it is dead, and reports
// whether it did. s.mu is held.
func (s *Set) evictDead(now time.Time) bool {
	oldest := ""
	for id, m := range s.members {
		if oldest == "" || m.LastSeen.Before(s.members[oldest].LastSeen) {
			oldest = id
		}
	}
	if oldest == "" || now.Sub(s.members[oldest].LastSeen) <= s.timeout {
		return false
	}
	delete(s.members, oldest)
	return true
}

// Changed returns a channel that is closed at the next heartbeat.
func (s *Set) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Snapshot returns every listed consumer, by id, with Alive computed from
// the clock. Consumers silent for longer than Forget are dropped for good.
func (s *Set) Snapshot() []Member {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Member, 0, len(s.members))
	for id, m := range s.members {
		age := now.Sub(m.LastSeen)
		if age > s.forget {
			delete(s.members, id)
			continue
		}
		c := *m
		c.samples = nil
		c.Alive = age <= s.timeout
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Consumer < out[j].Consumer })
	return out
}

// Alive counts the live consumers.
func (s *Set) Alive() int {
	n := 0
	for _, m := range s.Snapshot() {
		if m.Alive {
			n++
		}
	}
	return n
}

// Behind returns the ids of the live consumers whose applied control-log
// position is before pos. An empty result means every live consumer has
// folded the message at pos (vacuously so when none is alive).
func (s *Set) Behind(pos int64) []string {
	var out []string
	for _, m := range s.Snapshot() {
		if m.Alive && m.Position < pos {
			out = append(out, m.Consumer)
		}
	}
	return out
}

// Wait blocks until every live consumer has folded the message at pos, or
// ctx ends. It re-checks at every heartbeat and every poll interval (a
// consumer that dies stops holding the wait). It returns the ids still
// behind: none when converged.
func (s *Set) Wait(ctx context.Context, pos int64, poll time.Duration) []string {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		changed := s.Changed()
		behind := s.Behind(pos)
		if len(behind) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return behind
		case <-changed:
		case <-t.C:
		}
	}
}

// addSample appends hb to the samples, drops those older than RateWindow
// before it (keeping one at or beyond the window's start, so the rate spans
// the whole window), and returns the rate over what is left. A counter that
// went down (the consumer restarted under the same id) starts afresh.
func addSample(ss []sample, hb heartbeat.Message, now time.Time) ([]sample, float64) {
	at := hb.SentAt
	if at == 0 {
		at = now.UnixNano()
	}
	if n := len(ss); n > 0 && (hb.Records < ss[n-1].records || at <= ss[n-1].at) {
		if hb.Records < ss[n-1].records {
			ss = ss[:0]
		} else {
			return ss, rate(ss) // a duplicate or reordered heartbeat
		}
	}
	ss = append(ss, sample{at: at, records: hb.Records})
	cut := 0
	for cut+1 < len(ss) && ss[cut+1].at <= at-RateWindow.Nanoseconds() {
		cut++
	}
	if cut > 0 {
		ss = append(ss[:0], ss[cut:]...)
	}
	return ss, rate(ss)
}

func rate(ss []sample) float64 {
	if len(ss) < 2 {
		return 0
	}
	first, last := ss[0], ss[len(ss)-1]
	return float64(last.records-first.records) / (float64(last.at-first.at) / 1e9)
}
