package routing

import (
	"errors"
	"fmt"
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/connpipe/connpipe/shared/control"
)

// Ring picks a backend for a key hash by weighted rendezvous hashing. It is
// built from a table, indexes t.Backends, and is not safe for concurrent
// use (SetUp changes it; Pick alone may run concurrently).
type Ring struct {
	names  []string
	seed   []uint64
	weight []float64
	up     []bool
	usable int // backends up with weight > 0
}

// NewRing builds a ring over the backends of t, every backend up.
func NewRing(t *control.Table) (*Ring, error) {
	if t == nil || len(t.Backends) == 0 {
		return nil, errors.New("routing table has no backends")
	}
	m := len(t.Backends)
	r := &Ring{names: make([]string, m), seed: make([]uint64, m), weight: make([]float64, m), up: make([]bool, m)}
	for i, b := range t.Backends {
		if b.Weight < 0 || b.Weight > control.MaxWeight {
			return nil, fmt.Errorf("backend %q: %w: %d", b.Name, control.ErrBadWeight, b.Weight)
		}
		r.names[i], r.seed[i], r.weight[i], r.up[i] = b.Name, xxhash.Sum64String(b.Name), float64(b.Weight), true
	}
	r.count()
	if r.usable == 0 {
		return nil, ErrNoBackend
	}
	return r, nil
}

func (r *Ring) count() {
	r.usable = 0
	for i, w := range r.weight {
		if w > 0 && r.up[i] {
			r.usable++
		}
	}
}

// Len is the number of backends.
func (r *Ring) Len() int { return len(r.names) }

// Name is the name of backend i.
func (r *Ring) Name(i int) string { return r.names[i] }

// SetUp marks backend i usable or not. Only the keys of a backend that goes
// down move (to their next choice); they come back when it is up again.
func (r *Ring) SetUp(i int, up bool) {
	if r.up[i] != up {
		r.up[i] = up
		r.count()
	}
}

// Routable reports whether Pick can return a backend.
func (r *Ring) Routable() bool { return r.usable > 0 }

// Pick returns the backend for key hash h among the usable backends, or -1
// when there is none.
func (r *Ring) Pick(h uint64) int {
	best, bestScore := -1, 0.0
	for i, w := range r.weight {
		if w == 0 || !r.up[i] {
			continue
		}
		if s := score(h, r.seed[i], w); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// score is −w/ln(u) with u = unit(mix(h, seed)) ∈ (0,1).
func score(h, seed uint64, w float64) float64 {
	x := mix(h ^ seed)
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return -w / math.Log(u)
}

// mix is the splitmix64 finalizer: a bijection that spreads every input bit
// over the output.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
