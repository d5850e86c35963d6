package members

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/heartbeat"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func alive(s *Set) []string {
	var out []string
	for _, m := range s.Snapshot() {
		if m.Alive {
			out = append(out, m.Consumer)
		}
	}
	return out
}

func TestExpiry(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := New(5*time.Second, clk.Now)
	s.Observe(heartbeat.Message{Consumer: "c1", Position: 3})
	s.Observe(heartbeat.Message{Consumer: "c2", Position: 3})

	steps := []struct {
		advance time.Duration
		beat    string // consumer heartbeating after the advance
		alive   []string
		listed  int
	}{
		{advance: 4 * time.Second, beat: "c2", alive: []string{"c1", "c2"}, listed: 2},
		{advance: time.Second, alive: []string{"c1", "c2"}, listed: 2}, // c1 at exactly the timeout
		{advance: time.Millisecond, alive: []string{"c2"}, listed: 2},  // c1 just past it: dead, still listed
		{advance: 4 * time.Second, beat: "c2", alive: []string{"c2"}, listed: 2},
		{advance: ForgetFactor*5*time.Second + time.Millisecond, alive: nil, listed: 0}, // both forgotten
		{beat: "c1", alive: []string{"c1"}, listed: 1},                                  // a returning consumer is back
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		if st.beat != "" {
			s.Observe(heartbeat.Message{Consumer: st.beat, Position: 3})
		}
		if got := alive(s); !slices.Equal(got, st.alive) {
			t.Errorf("step %d: alive = %v, want %v", i, got, st.alive)
		}
		if got := len(s.Snapshot()); got != st.listed {
			t.Errorf("step %d: listed = %d, want %d", i, got, st.listed)
		}
		if got := s.Alive(); got != len(st.alive) {
			t.Errorf("step %d: Alive() = %d, want %d", i, got, len(st.alive))
		}
	}
}

func TestBehindIgnoresDead(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := New(5*time.Second, clk.Now)
	s.Observe(heartbeat.Message{Consumer: "old", Position: 1})
	clk.Advance(3 * time.Second)
	s.Observe(heartbeat.Message{Consumer: "new", Position: 7})
	if got := s.Behind(7); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("Behind(7) = %v, want [old]", got)
	}
	clk.Advance(3 * time.Second) // old is now silent for 6s > 5s
	if got := s.Behind(7); len(got) != 0 {
		t.Fatalf("Behind(7) after old died = %v, want none", got)
	}
	if got := s.Behind(8); !slices.Equal(got, []string{"new"}) {
		t.Fatalf("Behind(8) = %v, want [new]", got)
	}
}

func TestWaitConverges(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := New(5*time.Second, clk.Now)
	s.Observe(heartbeat.Message{Consumer: "a", Position: 1})
	s.Observe(heartbeat.Message{Consumer: "b", Position: 1})

	done := make(chan []string)
	go func() { done <- s.Wait(context.Background(), 4, time.Hour) }()
	s.Observe(heartbeat.Message{Consumer: "a", Position: 4})
	select {
	case got := <-done:
		t.Fatalf("Wait returned %v while b is behind", got)
	case <-time.After(50 * time.Millisecond):
	}
	s.Observe(heartbeat.Message{Consumer: "b", Position: 5})
	select {
	case got := <-done:
		if len(got) != 0 {
			t.Fatalf("Wait = %v, want converged", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after every consumer reached the position")
	}
}

func TestWaitTimesOutWithTheLaggards(t *testing.T) {
	s := New(time.Minute, nil)
	s.Observe(heartbeat.Message{Consumer: "slow", Position: 2})
	s.Observe(heartbeat.Message{Consumer: "fast", Position: 9})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if got := s.Wait(ctx, 9, 10*time.Millisecond); !slices.Equal(got, []string{"slow"}) {
		t.Fatalf("Wait = %v, want [slow]", got)
	}
}

func TestRate(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := New(5*time.Second, clk.Now)
	sec := int64(time.Second)
	base := clk.Now().UnixNano()
	steps := []struct {
		sentAt  int64 // ns after base
		records uint64
		want    float64
	}{
		{0, 1000, 0},                 // one heartbeat: no rate yet
		{sec, 1500, 500},             // 500 in 1 s
		{2 * sec, 2500, 750},         // 1500 in 2 s
		{2 * sec, 2600, 750},         // same sent_at again: ignored
		{7 * sec, 2500 + 500*5, 500}, // window keeps the sample at 2 s: 2500 in 5 s
		{8 * sec, 10, 0},             // counter went down: a restart, start afresh
		{9 * sec, 110, 100},
	}
	for i, st := range steps {
		s.Observe(heartbeat.Message{Consumer: "c1", SentAt: base + st.sentAt, Records: st.records})
		got := s.Snapshot()[0].Rate
		if got != st.want {
			t.Errorf("step %d: rate %v, want %v", i, got, st.want)
		}
	}
}

// TestMembersCapped: once MaxMembers live consumers are kept, a heartbeat
// from a new id is refused and nothing is kept for it; once the oldest is
// dead, a new id takes its place.
func TestMembersCapped(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	s := New(2*time.Second, clk.Now)
	for i := range MaxMembers {
		if err := s.Observe(heartbeat.Message{Consumer: "c" + strconv.Itoa(i)}); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		clk.Advance(time.Millisecond)
	}
	for i := range 100 {
		if err := s.Observe(heartbeat.Message{Consumer: "flood" + strconv.Itoa(i)}); !errors.Is(err, ErrTooManyMembers) {
			t.Fatalf("new id past the cap: err %v, want ErrTooManyMembers", err)
		}
	}
	if n := len(s.Snapshot()); n != MaxMembers {
		t.Fatalf("%d members kept, want %d", n, MaxMembers)
	}
	if err := s.Observe(heartbeat.Message{Consumer: "c5", Position: 9}); err != nil {
		t.Fatalf("a known id past the cap: %v", err)
	}
	clk.Advance(1500 * time.Millisecond) // c0 is now silent for over 2s
	for i := 1; i < MaxMembers; i++ {
		s.Observe(heartbeat.Message{Consumer: "c" + strconv.Itoa(i)})
	}
	if err := s.Observe(heartbeat.Message{Consumer: "new"}); err != nil {
		t.Fatalf("new id with a dead member to replace: %v", err)
	}
	ids := map[string]bool{}
	for _, m := range s.Snapshot() {
		ids[m.Consumer] = true
	}
	if len(ids) != MaxMembers || ids["c0"] || !ids["new"] {
		t.Errorf("%d members, c0 kept %v, new kept %v: want c0 replaced by new", len(ids), ids["c0"], ids["new"])
	}
}
