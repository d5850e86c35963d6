// Package router picks the Redis backend of each record: weighted
// round-robin with exact proportions, like HAProxy's `balance roundrobin`
// (Router, mode "weighted"), or weighted consistent hashing on a key of
// the record (Ring, mode "hash").
//
// # Algorithm
//
// With weights w_i (Σ = W), every W consecutive picks give backend i exactly
// w_i records, and after any prefix of n picks since the router was built
// (or since its set of healthy backends last changed) every backend's count
// c_i satisfies |c_i − n·w_i/W| < 1: the split is exact to within one record
// at every point, not only at the end of a cycle.
//
// nginx's smooth weighted round-robin (add w_i to every current weight,
// pick the largest, subtract W from it) was the starting point. It gives the
// right counts per cycle and keeps |c_i − n·w_i/W| < 1 for two or three
// backends, but with more it can fall behind by more than a record (weights
// 41/163/249/1/1/1/249/1 lag by 1.32 records after 378 picks). So this
// router schedules the picks as unit jobs with windows (the "quota method"):
// backend i's k-th pick of a cycle may come no earlier than pick
// ⌊(k−1)·W/w_i⌋+1 (so it never runs ahead by a record) and no later than pick
// ⌈k·W/w_i⌉ (so it never falls behind by one). Earliest deadline first over
// these windows meets every deadline, so each prefix stays within quota.
// The sequence depends only on the ratios of the weights: 30/70 picks the
// same backends in the same order as 3/7.
//
// A weight of 0 drains a backend. A backend marked down is left out and its
// share goes to the others in proportion to their weights; any change of the
// set of usable backends restarts the cycle, so the new split is exact from
// the change on. A new routing table is a new Router (see package app),
// which also starts a fresh cycle.
//
// A Router is not safe for concurrent use: one goroutine routes.
//
// # Consistent hashing (mode "hash")
//
// Ring is package hashring's weighted rendezvous hashing, shared with admin
// so that reading back a key can ask the instance that owns it; see that
// package for the algorithm, why it was chosen and its measured figures.
package router

import (
	"errors"
	"fmt"

	"github.com/connpipe/connpipe/shared/control"
)

// ErrNoBackend is returned by New when every backend has weight 0.
var ErrNoBackend = errors.New("no backend with weight > 0")

// Router routes records over a fixed list of weighted backends.
type Router struct {
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
}

// New builds a router over the backends of t, in the table's order; Next
// returns indexes into t.Backends. Every backend starts usable.
func New(t *control.Table) (*Router, error) {
	if t == nil || len(t.Backends) == 0 {
		return nil, errors.New("routing table has no backends")
	}
	m := len(t.Backends)
	r := &Router{
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
func (r *Router) Len() int { return len(r.names) }

// Name is the name of backend i.
func (r *Router) Name(i int) string { return r.names[i] }

// Weight is the configured weight of backend i.
func (r *Router) Weight(i int) int { return int(r.weight[i]) }

// Up reports whether backend i is usable.
func (r *Router) Up(i int) bool { return r.up[i] }

// SetUp marks backend i usable or not. A change restarts the cycle over the
// new set of usable backends.
func (r *Router) SetUp(i int, up bool) {
	if r.up[i] == up {
		return
	}
	r.up[i] = up
	r.restart()
}

// Routable reports whether some usable backend has weight > 0, that is
// whether Next can return a backend.
func (r *Router) Routable() bool { return r.total > 0 }

// restart begins a new cycle over the usable backends.
func (r *Router) restart() {
	r.total, r.n = 0, 0
	for i := range r.eff {
		r.eff[i] = 0
		if r.up[i] {
			r.eff[i] = r.weight[i]
		}
		r.total += r.eff[i]
	}
	for i := range r.eff {
		r.count[i] = 0
		if r.eff[i] > 0 {
			r.release[i] = 1
			r.deadline[i] = ceilDiv(r.total, r.eff[i])
		}
	}
}

// Next returns the index of the backend for the next record, or -1 when no
// usable backend has weight > 0.
func (r *Router) Next() int {
	if r.total == 0 {
		return -1
	}
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
	if r.n == r.total {
		// End of a cycle: every backend had exactly its weight.
		r.restart()
	}
	return best
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
