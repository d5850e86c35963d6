package routing

import (
	"errors"
	"fmt"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
)

// ErrNoBackend is returned by NewRoute, NewSchedule and NewRing when every
// backend has weight 0.
var ErrNoBackend = errors.New("no backend with weight > 0")

// Route is a routing table made ready for use: its schedule (mode
// "weighted") or ring (mode "hash") and the table's key function. Its
// indexes are those of the table's backends. A Route is not safe for
// concurrent use: one goroutine routes.
type Route struct {
	table    *control.Table
	schedule *Schedule
	ring     *Ring   // nil in mode weighted
	key      KeyFunc // the table's hash key, in mode hash or when sticky
	index    map[string]int
}

// NewRoute builds the route of t, every backend up.
func NewRoute(t *control.Table) (*Route, error) {
	s, err := NewSchedule(t)
	if err != nil {
		return nil, err
	}
	r := &Route{table: t, schedule: s, index: make(map[string]int, len(t.Backends))}
	for i, b := range t.Backends {
		r.index[b.Name] = i
	}
	if t.RoutingMode().Info().Hashed || t.Sticky {
		if r.key, err = KeyFor(t.Key()); err != nil {
			return nil, err
		}
	}
	switch t.Mode {
	case "", control.ModeWeighted:
	case control.ModeHash:
		if r.ring, err = NewRing(t); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: %q", control.ErrBadMode, t.Mode)
	}
	return r, nil
}

// Table is the table the route was built from.
func (r *Route) Table() *control.Table { return r.table }

// Index is the index of the backend named name, or false when the table
// has none of that name.
func (r *Route) Index(name string) (int, bool) {
	i, ok := r.index[name]
	return i, ok
}

// SetUp marks backend i usable or not.
func (r *Route) SetUp(i int, up bool) {
	r.schedule.SetUp(i, up)
	if r.ring != nil {
		r.ring.SetUp(i, up)
	}
}

// Routable reports whether Pick can return a backend.
func (r *Route) Routable() bool {
	if r.ring != nil {
		return r.ring.Routable()
	}
	return r.schedule.Routable()
}

// Hashed reports whether Pick depends on the key hash (mode "hash"); in
// mode "weighted" the hash is not needed unless the table is sticky.
func (r *Route) Hashed() bool { return r.ring != nil }

// Key is the hash of rec's routing key: its payload key if it has one,
// else the table's hash key. Only a Route in mode "hash" or a sticky one
// has a key function.
func (r *Route) Key(rec *record.Record) uint64 { return r.key(rec) }

// PickAt is Pick for a record at place p of its producer's stream (see
// Schedule.At): in mode "weighted" the same place always gets the same
// backend while the usable backends stay the same.
func (r *Route) PickAt(h, p, producer uint64) int {
	if r.ring != nil {
		return r.ring.Pick(h)
	}
	return r.schedule.At(p, producer)
}

// Pick is the mode's choice for a record with key hash h (h is ignored in
// mode "weighted", where each call takes the schedule's next pick), or -1
// when no backend is usable.
func (r *Route) Pick(h uint64) int {
	if r.ring != nil {
		return r.ring.Pick(h)
	}
	return r.schedule.Next()
}
