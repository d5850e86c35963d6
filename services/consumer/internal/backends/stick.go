package backends

import (
	"context"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/routing"
)

// stickEntry is a cached owner.
type stickEntry struct {
	owner string
	at    int64 // Unix ns when read from the stick home
}

// stickCache is a bounded cache of owners: two generations, the older
// dropped whole when the newer fills, so lookups and inserts are O(1) and
// recently used keys survive.
type stickCache struct {
	kind, home string // the hash key and stick home the entries belong to
	max        int
	cur, prev  map[uint64]stickEntry
}

func (c *stickCache) reset(kind, home string) {
	c.kind, c.home = kind, home
	c.cur, c.prev = map[uint64]stickEntry{}, map[uint64]stickEntry{}
}

func (c *stickCache) get(h uint64) (stickEntry, bool) {
	if e, ok := c.cur[h]; ok {
		return e, true
	}
	e, ok := c.prev[h]
	if ok {
		c.put(h, e)
	}
	return e, ok
}

func (c *stickCache) put(h uint64, e stickEntry) {
	if len(c.cur) >= c.max/2 {
		c.prev, c.cur = c.cur, make(map[uint64]stickEntry, len(c.cur))
	}
	c.cur[h] = e
}

// routeSticky routes the pending records of a round by the stick table.
func (s *Sink) routeSticky(ctx context.Context, r *route, msgs []*record.Batch, assign []int32) {
	now := s.cfg.Now().UnixNano()
	refresh := s.cfg.StickRefresh.Nanoseconds()
	kind, home := r.Table().Key().String(), r.backends[routing.StickHome(r.Table())]
	c := &s.stick
	if c.cur == nil || c.kind != kind || c.home != home.name {
		c.reset(kind, home.name)
	}
	if s.owner == nil {
		s.owner = map[uint64]int{}
	}
	clear(s.owner)
	if cap(s.hashes) < len(assign) {
		s.hashes = make([]uint64, len(assign))
	}
	hashes := s.hashes[:len(assign)]
	misses := s.misses[:0]
	hits := 0
	k := 0
	for _, m := range msgs {
		for j := range m.Records {
			if assign[k] == pending {
				h := r.Key(&m.Records[j])
				hashes[k] = h
				if _, seen := s.owner[h]; !seen {
					i := -1
					if e, ok := c.get(h); ok && now-e.at < refresh {
						if idx, ok := r.Index(e.owner); ok {
							i = idx
							hits++
						}
					}
					if i < 0 {
						misses = append(misses, h)
					}
					s.owner[h] = i
				}
			}
			k++
		}
	}
	s.misses = misses
	if hits > 0 {
		s.m.Stick.WithLabelValues("cache").Add(float64(hits))
	}
	if len(misses) > 0 {
		s.lookupOwners(ctx, r, home, misses, now)
	}
	k = 0
	for _, m := range msgs {
		for j := range m.Records {
			if assign[k] == pending {
				h := hashes[k]
				i := s.owner[h]
				if i < 0 || !r.backends[i].up.Load() {
					// Owner down (or the stick home unreadable): the mode's
					// choice for now; the entry stays for its return.
					i = pick(r, h, m, j)
				}
				assign[k] = int32(i)
				s.add(i, m, j)
			}
			k++
		}
	}
}

// lookupOwners asks the stick home for the owners of misses, offering the
// mode's choice for keys without one, and records them in s.owner and the
// cache. If the home is down or fails, s.owner gets the mode's choice and
// nothing is cached.
func (s *Sink) lookupOwners(ctx context.Context, r *route, home *backend, misses []uint64, now int64) {
	cands := make([]string, len(misses))
	for j, h := range misses {
		if i := r.Pick(h); i >= 0 {
			cands[j] = r.backends[i].name
		}
	}
	fallback := func(from int) {
		for j := from; j < len(misses); j++ {
			i := -1
			if cands[j] != "" {
				i, _ = r.Index(cands[j])
			}
			s.owner[misses[j]] = i
		}
		s.m.Stick.WithLabelValues("fallback").Add(float64(len(misses) - from))
	}
	if !home.up.Load() {
		fallback(0)
		return
	}
	st := routing.Stick{Layout: s.cfg.Layout, Kind: r.Table().Key(), TTL: s.cfg.Layout.Retention + s.cfg.StickRefresh, Timeout: s.cfg.Timeout}
	n, err := st.Claim(ctx, home.rdb, r.Table().Backends, misses, cands, func(j int, owner string) {
		h := misses[j]
		i, ok := r.Index(owner)
		if !ok {
			i = -1
		}
		s.owner[h] = i
		s.stick.put(h, stickEntry{owner: owner, at: now})
	})
	if n > 0 {
		s.m.Stick.WithLabelValues("redis").Add(float64(n))
	}
	if err != nil {
		if ctx.Err() == nil {
			s.m.WriteErrors.WithLabelValues(home.name).Inc()
			s.markDown(home, err)
		}
		fallback(n)
	}
}
