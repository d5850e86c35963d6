package sink

import (
	"context"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/hashring"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// stickScript: KEYS are stick keys; ARGV[1] the TTL in ms, ARGV[2] the
// table's backend names as ",a,b,", ARGV[2+i] the choice for KEYS[i].
// Returns the owner of every key.
var stickScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and string.find(ARGV[2], ',' .. v .. ',', 1, true) then
    redis.call('PEXPIRE', k, ARGV[1])
  else
    v = ARGV[i + 2]
    redis.call('SET', k, v, 'PX', ARGV[1])
  end
  out[i] = v
end
return out`)

// stickChunk bounds the keys of one script call.
const stickChunk = 512

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
	kind, home := r.table.Key(), r.backends[0]
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
				h := r.key(&m.Records[j])
				hashes[k] = h
				if _, seen := s.owner[h]; !seen {
					i := -1
					if e, ok := c.get(h); ok && now-e.at < refresh {
						if idx, ok := r.index[e.owner]; ok {
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
					i = r.pick(h)
				}
				assign[k] = int32(i)
				rec := &m.Records[j]
				s.batches[i].Add(store.Bucket(rec.TS, m.Ingest, m.Received), rec)
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
		if i := r.pick(h); i >= 0 {
			cands[j] = r.backends[i].name
		}
	}
	fallback := func(from int) {
		for j := from; j < len(misses); j++ {
			i := -1
			if cands[j] != "" {
				i = r.index[cands[j]]
			}
			s.owner[misses[j]] = i
		}
		s.m.Stick.WithLabelValues("fallback").Add(float64(len(misses) - from))
	}
	if !home.up.Load() {
		fallback(0)
		return
	}
	var names strings.Builder
	names.WriteByte(',')
	for _, b := range r.backends {
		names.WriteString(b.name)
		names.WriteByte(',')
	}
	ttl := strconv.FormatInt((s.cfg.Layout.Retention + s.cfg.StickRefresh).Milliseconds(), 10)
	kind := r.table.Key()
	for from := 0; from < len(misses); from += stickChunk {
		to := min(from+stickChunk, len(misses))
		keys := make([]string, 0, to-from)
		args := make([]any, 0, to-from+2)
		args = append(args, ttl, names.String())
		for j := from; j < to; j++ {
			keys = append(keys, hashring.StickKey(s.cfg.Layout.Prefix, kind, misses[j]))
			args = append(args, cands[j])
		}
		lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		owners, err := stickScript.Run(lctx, home.rdb, keys, args...).StringSlice()
		cancel()
		if err == nil && len(owners) != len(keys) {
			err = errShortReply
		}
		if err != nil {
			if ctx.Err() == nil {
				s.m.WriteErrors.WithLabelValues(home.name).Inc()
				s.markDown(home, err)
			}
			fallback(from)
			return
		}
		for j, owner := range owners {
			h := misses[from+j]
			i, ok := r.index[owner]
			if !ok {
				i = -1
			}
			s.owner[h] = i
			s.stick.put(h, stickEntry{owner: owner, at: now})
		}
		s.m.Stick.WithLabelValues("redis").Add(float64(len(owners)))
	}
}
