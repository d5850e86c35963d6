package backends

import (
	"context"
	"strings"
	"time"

	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/redisconn"
)

// BackendState is a backend's state as status reports it.
type BackendState struct {
	State  redisconn.State `json:"state"`
	Reason string          `json:"reason,omitempty"` // passwords redacted
	Since  time.Time       `json:"since"`
}

// syncHealth tells the route which backends are up.
func (s *Sink) syncHealth(r *route) {
	for i, b := range r.backends {
		r.SetUp(i, b.up.Load())
	}
}

// setState puts b in state for err (nil: up) and returns the state it
// was in and how long it had been in it. Its caller holds b.mu.
func (s *Sink) setState(b *backend, state redisconn.State, err error, now time.Time) (redisconn.State, time.Duration) {
	prev, was := b.state, now.Sub(b.since)
	b.state, b.reason = state, ""
	if err != nil {
		b.reason = redact.Text(err.Error())
	}
	if prev != state {
		b.since = now
	}
	return prev, was
}

// markDown takes b out of rotation in the state err names. A backend
// already out only changes state (logged once per change).
func (s *Sink) markDown(b *backend, err error) {
	state := redisconn.Classify(err)
	now := s.cfg.Now()
	b.mu.Lock()
	prev, upFor := s.setState(b, state, err, now)
	wentOut := b.up.CompareAndSwap(true, false)
	if wentOut {
		// A backend that fails again soon after it came back (Redis just
		// under maxmemory takes a small write, then refuses the next)
		// keeps its longer wait; one that served a while starts afresh.
		if upFor > s.cfg.MaxProbeInterval {
			b.probes = 0
		} else {
			b.probes++
		}
		b.nextProbe = now.Add(s.probeWait(b.probes))
	}
	b.mu.Unlock()
	if prev != state {
		s.stateChanged(b, state)
	}
	switch {
	case wentOut:
		s.m.Up.WithLabelValues(b.name).Set(0)
		s.log.Warn("redis backend out of rotation", "backend", b.name, "addr", b.addr, "state", state, "err", err)
	case prev != state:
		s.log.Warn("redis backend out of rotation, state changed", "backend", b.name, "addr", b.addr, "state", state, "was", prev, "err", err)
	}
}

func (s *Sink) stateChanged(b *backend, state redisconn.State) {
	s.setStateMetric(b.name, state)
	s.m.StateChanges.WithLabelValues(b.name, state.String()).Inc()
}

func (s *Sink) setStateMetric(name string, state redisconn.State) {
	for _, st := range redisconn.ConsumerStates() {
		v := 0.0
		if st == state {
			v = 1
		}
		s.m.State.WithLabelValues(name, st.String()).Set(v)
	}
}

// States reports the state of every backend of the table in force.
func (s *Sink) States() map[string]BackendState {
	out := map[string]BackendState{}
	for _, b := range s.latest.Load().backends {
		b.mu.Lock()
		out[b.name] = BackendState{State: b.state, Reason: b.reason, Since: b.since}
		b.mu.Unlock()
	}
	return out
}

// stateSummary lists the backends of r and their states, for a log line.
func (s *Sink) stateSummary(r *route) string {
	var sb strings.Builder
	for i, b := range r.backends {
		if i > 0 {
			sb.WriteByte(' ')
		}
		b.mu.Lock()
		sb.WriteString(b.name + "=" + b.state.String())
		b.mu.Unlock()
	}
	return sb.String()
}

// probeWait is the wait before the next write probe after n failed ones:
// CheckInterval doubled n times, at most MaxProbeInterval.
func (s *Sink) probeWait(n int) time.Duration {
	return min(s.cfg.CheckInterval<<min(n, 16), s.cfg.MaxProbeInterval)
}

// RunChecker probes the backends out of rotation, and those failing over,
// with a real write when their probe is due, and puts them back in
// rotation when it succeeds. It returns when ctx ends.
func (s *Sink) RunChecker(ctx context.Context) {
	t := time.NewTicker(min(s.cfg.CheckInterval, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, b := range s.due(s.cfg.Now()) {
			s.probe(ctx, b)
		}
	}
}

// due is the backends whose write probe is due at now.
func (s *Sink) due(now time.Time) []*backend {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*backend
	for _, b := range s.pool {
		b.mu.Lock()
		// Out of rotation, or failing over (its records wait, but none
		// may come to try it).
		if (!b.up.Load() || b.state == redisconn.StateFailover) && !now.Before(b.nextProbe) {
			due = append(due, b)
		}
		b.mu.Unlock()
	}
	return due
}

// probeBytes is the size of the write probe: that of a large round's
// write, so that an instance just under maxmemory, which takes a tiny
// write and refuses the next real one, stays out.
const probeBytes = 64 << 10

var probeValue = strings.Repeat("p", probeBytes)

// probe writes a short-lived key to b: success puts b back in rotation, a
// failure sets its state and doubles the wait before the next probe.
func (s *Sink) probe(ctx context.Context, b *backend) {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout+s.cfg.ReplicaTimeout)
	err := s.probeWrite(pctx, b)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if b.up.Load() {
		// Failing over.
		if err == nil {
			s.serving(b)
		} else {
			s.failing(b, err)
		}
		return
	}
	now := s.cfg.Now()
	if err == nil {
		b.mu.Lock()
		_, out := s.setState(b, redisconn.StateUp, nil, now)
		b.mu.Unlock()
		if b.up.CompareAndSwap(false, true) {
			s.m.Up.WithLabelValues(b.name).Set(1)
			s.stateChanged(b, redisconn.StateUp)
			s.log.Info("redis backend accepts writes again, back in rotation", "backend", b.name, "addr", b.addr,
				"out_for", out.Round(time.Millisecond))
		}
		return
	}
	state := redisconn.Classify(err)
	b.mu.Lock()
	prev, _ := s.setState(b, state, err, now)
	b.probes++
	b.nextProbe = now.Add(s.probeWait(b.probes))
	b.mu.Unlock()
	if prev != state {
		s.stateChanged(b, state)
		s.log.Warn("redis backend out of rotation, state changed", "backend", b.name, "addr", b.addr, "state", state, "was", prev, "err", err)
	}
}
