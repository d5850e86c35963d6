package routing

import (
	"errors"
	"fmt"

	"github.com/connpipe/connpipe/shared/control"
)

// Schedule is the exact weighted round-robin of mode "weighted" over a
// fixed list of backends.
type Schedule struct {
	names  []string
	weight []int64 // configured weight
	up     []bool  // usable (healthy)

	// Cycle state over the usable backends with weight > 0.
	eff      []int64 // weight if usable, else 0
	total    int64   // Σ eff: the cycle length
	n        int64   // picks so far in this cycle
	count    []int64 // picks of each backend in this cycle
	release  []int64 // earliest pick number of the backend's next pick
	deadline []int64 // latest pick number of the backend's next pick
	cycle    []int32 // the picks of one whole cycle, in order, for At
}

// NewSchedule builds a schedule over the backends of t, in the table's
// order; Next returns indexes into t.Backends. Every backend starts usable.
func NewSchedule(t *control.Table) (*Schedule, error) {
	if t == nil || len(t.Backends) == 0 {
		return nil, errors.New("routing table has no backends")
	}
	m := len(t.Backends)
	r := &Schedule{
		names: make([]string, m), weight: make([]int64, m), up: make([]bool, m),
		eff: make([]int64, m), count: make([]int64, m), release: make([]int64, m), deadline: make([]int64, m),
	}
	total := 0
	for i, b := range t.Backends {
		if b.Weight < 0 || b.Weight > control.MaxWeight {
			return nil, fmt.Errorf("backend %q: %w: %d", b.Name, control.ErrBadWeight, b.Weight)
		}
		r.names[i], r.weight[i], r.up[i] = b.Name, int64(b.Weight), true
		total += b.Weight
	}
	if total == 0 {
		return nil, ErrNoBackend
	}
	r.restart()
	return r, nil
}

// Len is the number of backends (usable or not).
func (r *Schedule) Len() int { return len(r.names) }

// Name is the name of backend i.
func (r *Schedule) Name(i int) string { return r.names[i] }

// Weight is the configured weight of backend i.
func (r *Schedule) Weight(i int) int { return int(r.weight[i]) }

// Up reports whether backend i is usable.
func (r *Schedule) Up(i int) bool { return r.up[i] }

// SetUp marks backend i usable or not. A change restarts the cycle over the
// new set of usable backends.
func (r *Schedule) SetUp(i int, up bool) {
	if r.up[i] == up {
		return
	}
	r.up[i] = up
	r.restart()
}

// Routable reports whether some usable backend has weight > 0, that is
// whether Next can return a backend.
func (r *Schedule) Routable() bool { return r.total > 0 }

// restart begins a new cycle over the usable backends.
func (r *Schedule) restart() {
	r.total, r.n = 0, 0
	for i := range r.eff {
		r.eff[i] = 0
		if r.up[i] {
			r.eff[i] = r.weight[i]
		}
		r.total += r.eff[i]
	}
	r.rewind()
	// One whole cycle, played ahead, is what At reads; Next then plays it
	// from the start.
	r.cycle = r.cycle[:0]
	for range r.total {
		r.cycle = append(r.cycle, int32(r.pick()))
	}
	r.rewind()
}

// rewind starts the cycle over the current usable backends.
func (r *Schedule) rewind() {
	r.n = 0
	for i := range r.eff {
		r.count[i] = 0
		if r.eff[i] > 0 {
			r.release[i] = 1
			r.deadline[i] = ceilDiv(r.total, r.eff[i])
		}
	}
}

// At is the pick at place p of an endless repetition of the cycle, shifted
// by offset: a pure function of (p, offset) and the usable backends. Mode
// "weighted" routes a record of a named batch by its place in its
// producer's stream, so every consumer, and a second delivery, sends it to
// the same backend, and a producer's stream is split exactly by weight to
// within a record per cycle. -1 when no usable backend has weight > 0.
func (r *Schedule) At(p, offset uint64) int {
	if r.total == 0 {
		return -1
	}
	t := uint64(r.total)
	return int(r.cycle[(p%t+offset%t)%t])
}

// Next returns the index of the backend for the next record, or -1 when no
// usable backend has weight > 0.
func (r *Schedule) Next() int {
	if r.total == 0 {
		return -1
	}
	best := r.pick()
	if r.n == r.total {
		// End of a cycle: every backend had exactly its weight.
		r.rewind()
	}
	return best
}

// pick plays the cycle's next pick.
func (r *Schedule) pick() int {
	r.n++
	best := -1
	var due int64
	for i, w := range r.eff {
		if w == 0 || r.release[i] > r.n {
			continue
		}
		if best < 0 || r.deadline[i] < due {
			best, due = i, r.deadline[i]
		}
	}
	if best < 0 {
		// Cannot happen: a quota schedule always has a backend released at
		// every pick. Keep routing rather than stall if it ever did.
		for i, w := range r.eff {
			if w > 0 {
				best = i
				break
			}
		}
	}
	w := r.eff[best]
	c := r.count[best] + 1
	r.count[best] = c
	r.release[best] = c*r.total/w + 1
	r.deadline[best] = ceilDiv((c+1)*r.total, w)
	return best
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
