// Package hashring picks the Redis instance that owns a key in routing
// mode "hash" (package control): the consumers route by it and admin reads
// a key back from its owner.
//
// A Ring sends every record with the same key to the same backend by
// weighted rendezvous hashing (highest random weight): for a key k and each
// backend i with weight w_i > 0, compute u = h(k, i) ∈ (0,1) and the score
// −w_i / ln(u); the key goes to the backend with the highest score.
//
// Why rendezvous rather than a ring of points (ketama, HAProxy's
// hash-type consistent) or Maglev:
//
//   - Shares are exact in expectation: P(i wins) = w_i / Σw for any weights
//     (the score is an exponential race), with no virtual nodes to tune.
//     Ketama's error shrinks only with the number of points per backend;
//     Maglev's with the table size, and both need rebuilding on change.
//   - Movement is minimal: raising w_i only raises i's scores, so keys move
//     only onto i; lowering it moves keys only off i; adding a backend
//     moves keys only onto it; removing one moves only its keys. Going from
//     30/70 to 50/50 moves, in expectation, exactly the 20 % the weights
//     demand. (Changing two weights at once among three or more backends
//     also reshuffles some keys of the unchanged ones: 20/30/50 → 30/30/40
//     moves 12.7 % for a 10 % minimum. One weight at a time is minimal.)
//   - A down backend is simply skipped: its keys go to their next highest
//     score, spread over the others by weight, and every other key stays.
//   - Nothing to build: a table change is a new slice of weights.
//
// The cost is one score per backend per record (a hash mix and a log),
// O(n) in the number of backends — tens of nanoseconds for the handful of
// Redis instances a pool has. Measured figures are in BenchmarkRing
// (go test -bench Ring github.com/connpipe/connpipe/shared/hashring).
//
// Every consumer must pick the same backend for a key, so nothing here is
// seeded per process: keys are hashed with xxhash64 and the per-backend
// hash is a fixed mix of the key hash with the xxhash of the backend's
// name (not its address, so moving an instance to a new address moves no
// keys).
package hashring

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
)

// KeyFunc derives the hash of a record's routing key.
type KeyFunc func(r *record.Record) uint64

// KeyFor returns the key function named by a table's hash key (control.KeySrc
// …), used for records without a payload key; a record with one is routed
// by it (WithRecordKey). The empty name means control.KeySrc.
func KeyFor(name string) (KeyFunc, error) {
	f, err := fieldKey(name)
	if err != nil {
		return nil, err
	}
	return WithRecordKey(f), nil
}

func fieldKey(name string) (KeyFunc, error) {
	switch name {
	case "", control.KeySrc:
		return HashSrc, nil
	case control.KeyDst:
		return HashDst, nil
	case control.KeyPair:
		return HashPair, nil
	case control.KeyFlow:
		return HashFlow, nil
	}
	return nil, fmt.Errorf("%w: hash key %q", control.ErrBadMode, name)
}

// protoTCP is the IP protocol number in the flow 5-tuple; connpipe records
// only TCP.
const protoTCP = 6

// put16 writes a as 16 bytes (IPv4 as IPv4-mapped IPv6), so a key does not
// depend on how the address family was recorded.
func put16(dst []byte, a netip.Addr) {
	b := a.As16()
	copy(dst, b[:])
}

// HashSrc hashes the source IP.
func HashSrc(r *record.Record) uint64 {
	var b [16]byte
	put16(b[:], r.Src)
	return xxhash.Sum64(b[:])
}

// HashDst hashes the destination IP.
func HashDst(r *record.Record) uint64 {
	var b [16]byte
	put16(b[:], r.Dst)
	return xxhash.Sum64(b[:])
}

// HashPair hashes source and destination IP.
func HashPair(r *record.Record) uint64 {
	var b [32]byte
	put16(b[0:], r.Src)
	put16(b[16:], r.Dst)
	return xxhash.Sum64(b[:])
}

// HashFlow hashes the 5-tuple: source and destination IP and port, protocol.
func HashFlow(r *record.Record) uint64 {
	var b [37]byte
	put16(b[0:], r.Src)
	put16(b[16:], r.Dst)
	b[32], b[33] = byte(r.SrcPort>>8), byte(r.SrcPort)
	b[34], b[35] = byte(r.DstPort>>8), byte(r.DstPort)
	b[36] = protoTCP
	return xxhash.Sum64(b[:])
}

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

// ErrNoBackend is returned by NewRing when every backend has weight 0.
var ErrNoBackend = errors.New("no backend with weight > 0")

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

// StickKey is the Redis key of the stick-table entry of key hash h under
// the hash key kind (control.KeySrc …): <prefix>stick:<kind>:<16 hex
// digits>. Its value is the name of the backend that owns the key; it lives
// on the stick home, the table's first backend by name.
func StickKey(prefix, kind string, h uint64) string {
	const digits = "0000000000000000"
	x := strconv.FormatUint(h, 16)
	return prefix + "stick:" + kind + ":" + digits[len(x):] + x
}
