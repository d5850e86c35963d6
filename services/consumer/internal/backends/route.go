package backends

import (
	"context"

	"github.com/connpipe/connpipe/shared/record"
)

// routeDrained assigns every pending record to the backends of weight 0
// that are up, in turn, and reports whether there was one.
func (s *Sink) routeDrained(r *route, msgs []*record.Batch, assign []int32) bool {
	s.drained = s.drained[:0]
	for i, b := range r.backends {
		if r.Table().Backends[i].Weight == 0 && b.up.Load() {
			s.drained = append(s.drained, i)
		}
	}
	if len(s.drained) == 0 {
		return false
	}
	k := 0
	for _, m := range msgs {
		for j := range m.Records {
			if assign[k] == pending {
				i := s.drained[s.nextDr%len(s.drained)]
				s.nextDr++
				assign[k] = int32(i)
				s.add(i, m, j)
			}
			k++
		}
	}
	return true
}

// refill empties every backend's batch and adds back the records that
// wait for a backend failing over (assigned, not stored); a new route
// sends them to be routed afresh instead.
func (s *Sink) refill(msgs []*record.Batch, assign []int32, fresh bool) {
	for _, b := range s.batches {
		b.Reset()
	}
	k := 0
	for _, m := range msgs {
		for j := range m.Records {
			switch i := assign[k]; {
			case i >= 0 && fresh:
				assign[k] = pending
			case i >= 0:
				s.add(int(i), m, j)
			}
			k++
		}
	}
}

// route assigns every pending record a backend and adds it to that
// backend's batch.
func (s *Sink) route(ctx context.Context, r *route, msgs []*record.Batch, assign []int32) {
	if r.Table().Sticky {
		s.routeSticky(ctx, r, msgs, assign)
		return
	}
	k := 0
	for _, m := range msgs {
		for j := range m.Records {
			if assign[k] == pending {
				var h uint64
				if r.Hashed() {
					h = r.Key(&m.Records[j])
				}
				i := pick(r, h, m, j)
				assign[k] = int32(i)
				s.add(i, m, j)
			}
			k++
		}
	}
}
