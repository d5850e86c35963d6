// Package tally counts the records stored on each Redis instance, per
// second — the counts behind the web page's records/s chart and its
// observed shares.
//
// The counts come from Redis itself, not from the consumers' reports, so
// they are what an operator would find by reading the store: records a
// dead or restarted consumer stored are counted, and the observed share
// over a window is exact for the records stored by the time of the read.
//
// Layout v2 keeps a counter per second on each instance (package store),
// written in the same Lua call as the records: a refresh reads the
// window's counters with one MGET per instance and no record. Seconds of
// layout v1 (from before an upgrade, until they expire) have no counter;
// a v1 bucket only ever grows by APPEND of whole entries, so the tally
// remembers, per bucket, how many bytes it has counted and reads only the
// bytes added since (store.Layout.Sizes, then ReadSpans from the last
// length), within MaxRead bytes a refresh.
//
// Windows count bucket seconds: the second a record entered the pipeline
// (max of its capture and ingest time). The second in progress is left
// out, since it is still filling; so the share window is the last Share
// complete seconds, and records/s is the mean of the last Rate complete
// seconds.
package tally

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// Defaults.
const (
	DefaultHistory  = 5 * time.Minute
	DefaultShare    = time.Minute
	DefaultRate     = 5 * time.Second
	DefaultInterval = time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultMaxRead  = 16 << 20
)

// Config configures a Tally.
type Config struct {
	Layout store.Layout
	// Client gives the Redis client of an instance's address.
	Client func(addr string) redis.Cmdable
	// History is how far back the per-second series reaches (capped by
	// the layout's retention: older buckets are gone).
	History time.Duration
	// Share is the window of the observed share; Rate the window of the
	// records/s mean.
	Share, Rate time.Duration
	// Interval is the least time between two refreshes: requests within
	// it share one snapshot.
	Interval time.Duration
	Timeout  time.Duration // per refresh of one instance
	// MaxRead bounds the bytes one refresh reads from one instance, so the
	// first refresh of a busy system (the whole history at once) is spread
	// over several, newest seconds first.
	MaxRead int64
	Now     func() time.Time
	Log     *slog.Logger
}

// Snapshot is the tally as of one refresh.
type Snapshot struct {
	At       int64      `json:"at"`         // Unix second of the refresh (in progress, not counted)
	From     int64      `json:"from"`       // first second of every Counts series
	To       int64      `json:"to"`         // last second (At-1)
	Share    Window     `json:"share"`      // window of the observed shares
	Rate     Window     `json:"rate"`       // window of the records/s means
	Backends []Instance `json:"backends"`   // in table order
	Total    int64      `json:"total"`      // records in the share window, all instances
	TookMS   float64    `json:"took_ms"`    // how long the refresh took
	ReadB    int64      `json:"read_bytes"` // bytes read from Redis by the refresh
}

// Window is a range of bucket seconds, both ends included.
type Window struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// Instance is one Redis instance's counts.
type Instance struct {
	Name   string  `json:"name"`
	Addr   string  `json:"addr"`
	Counts []int64 `json:"counts"` // records per second, From..To
	// Records in the share window, and their share of every instance's
	// (-1 when no instance stored anything in the window).
	Records int64   `json:"records"`
	Share   float64 `json:"share"`
	Rate    float64 `json:"rate"` // records/s, mean over the rate window
	// Error says why the last refresh could not read the instance; its
	// counts are then as of the last refresh that could.
	Error string `json:"error,omitempty"`
	// Partial says the refresh left older appended bytes for the next
	// ones (MaxRead): older seconds are still being counted.
	Partial bool `json:"partial,omitempty"`
}

// Tally keeps the per-second counts. It is safe for concurrent use.
type Tally struct {
	cfg Config

	mu        sync.Mutex
	instances map[string]*counts // by name
	snap      *Snapshot
	refreshed time.Time
}

type counts struct {
	addr    string
	buckets map[int64]bucket // layout v1, by second
	v2      map[int64]int64  // layout v2 counters, by second, as last read
	err     string
	partial bool
}

type bucket struct {
	bytes   int64 // bytes counted so far
	records int64 // entries in them
}

// New returns a Tally.
func New(cfg Config) *Tally {
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if r := cfg.Layout.Retention; r > 0 && cfg.History > r {
		cfg.History = r
	}
	if cfg.Share <= 0 {
		cfg.Share = DefaultShare
	}
	cfg.Share = min(cfg.Share, cfg.History)
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	cfg.Rate = min(cfg.Rate, cfg.History)
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxRead <= 0 {
		cfg.MaxRead = DefaultMaxRead
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Tally{cfg: cfg, instances: map[string]*counts{}}
}

// Snapshot returns the counts for the backends of t, refreshing them from
// Redis unless the last refresh is more recent than the interval.
func (t *Tally) Snapshot(ctx context.Context, backends []control.Backend) Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	if t.snap != nil && now.Sub(t.refreshed) < t.cfg.Interval && sameBackends(t.snap.Backends, backends) {
		return *t.snap
	}
	s := t.refresh(ctx, backends, now)
	t.snap, t.refreshed = &s, now
	return s
}

func sameBackends(have []Instance, want []control.Backend) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if have[i].Name != want[i].Name || have[i].Addr != want[i].Addr {
			return false
		}
	}
	return true
}

// refresh reads what each instance stored since the last refresh and
// computes the snapshot. Called with t.mu held.
func (t *Tally) refresh(ctx context.Context, backends []control.Backend, now time.Time) Snapshot {
	start := time.Now()
	at := now.Unix()
	s := Snapshot{
		At: at, To: at - 1,
		From:  at - int64(t.cfg.History/time.Second),
		Share: Window{From: at - int64(t.cfg.Share/time.Second), To: at - 1},
		Rate:  Window{From: at - int64(t.cfg.Rate/time.Second), To: at - 1},
	}
	live := make(map[string]bool, len(backends))
	var wg sync.WaitGroup
	read := make([]int64, len(backends))
	for i, b := range backends {
		live[b.Name] = true
		c := t.instances[b.Name]
		if c == nil || c.addr != b.Addr {
			c = &counts{addr: b.Addr, buckets: map[int64]bucket{}}
			t.instances[b.Name] = c
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
			defer cancel()
			n, err := t.read(rctx, t.cfg.Client(b.Addr), c, s.From, s.To)
			read[i] = n
			c.err = ""
			if err != nil {
				c.err = redact.Text(err.Error())
				t.cfg.Log.Debug("tally: read buckets", "backend", b.Name, "err", err)
			}
		}()
	}
	wg.Wait()
	for name := range t.instances {
		if !live[name] {
			delete(t.instances, name)
		}
	}

	s.Backends = make([]Instance, len(backends))
	for i, b := range backends {
		c := t.instances[b.Name]
		in := Instance{Name: b.Name, Addr: redact.Addr(b.Addr), Counts: make([]int64, s.To-s.From+1), Share: -1, Error: c.err, Partial: c.partial}
		for sec := s.From; sec <= s.To; sec++ {
			n := c.buckets[sec].records + c.v2[sec]
			in.Counts[sec-s.From] = n
			if sec >= s.Share.From {
				in.Records += n
			}
			if sec >= s.Rate.From {
				in.Rate += float64(n)
			}
		}
		in.Rate /= float64(s.Rate.To - s.Rate.From + 1)
		s.Total += in.Records
		s.ReadB += read[i]
		s.Backends[i] = in
	}
	if s.Total > 0 {
		for i := range s.Backends {
			s.Backends[i].Share = float64(s.Backends[i].Records) / float64(s.Total)
		}
	}
	s.TookMS = float64(time.Since(start).Microseconds()) / 1000
	return s
}

// read brings c's counts of seconds from..to up to date and forgets older
// ones. It returns the bytes of v1 entries it read.
func (t *Tally) read(ctx context.Context, rdb redis.Cmdable, c *counts, from, to int64) (int64, error) {
	per, err := t.cfg.Layout.Counters(ctx, rdb, from, to)
	if err != nil {
		return 0, err
	}
	c.v2 = make(map[int64]int64, len(per))
	for i, n := range per {
		if n > 0 {
			c.v2[from+int64(i)] = n
		}
	}
	return t.readV1(ctx, rdb, c, from, to)
}

// readV1 brings c's layout v1 buckets of seconds from..to up to date and
// forgets older ones. It returns the bytes of entries it read.
func (t *Tally) readV1(ctx context.Context, rdb redis.Cmdable, c *counts, from, to int64) (int64, error) {
	for sec := range c.buckets {
		if sec < from || sec > to {
			delete(c.buckets, sec)
		}
	}
	sizes, err := t.cfg.Layout.Sizes(ctx, rdb, from, to)
	if err != nil {
		return 0, err
	}
	var grown []store.Span
	for i, n := range sizes {
		sec := from + int64(i)
		b := c.buckets[sec]
		if n < b.bytes {
			// Shorter than counted: the bucket expired and began again
			// (only with a retention shorter than the history).
			b = bucket{}
			c.buckets[sec] = b
		}
		if n > b.bytes {
			grown = append(grown, store.Span{Sec: sec, From: b.bytes, To: n})
		}
	}
	// Newest seconds first, within the byte budget (at least one bucket).
	slices.SortFunc(grown, func(a, b store.Span) int { return cmp.Compare(b.Sec, a.Sec) })
	budget, n := t.cfg.MaxRead, 0
	for n < len(grown) && (n == 0 || budget >= grown[n].To-grown[n].From) {
		budget -= grown[n].To - grown[n].From
		n++
	}
	c.partial = n < len(grown)
	var read int64
	var bad error
	err = t.cfg.Layout.ReadSpans(ctx, rdb, grown[:n], func(sp store.Span, data []byte, entries int64, err error) {
		read += int64(len(data))
		if err != nil && bad == nil {
			// Count what decoded and move past the rest, so one bad
			// entry is reported once rather than read again forever.
			bad = err
		}
		b := c.buckets[sp.Sec]
		c.buckets[sp.Sec] = bucket{bytes: sp.From + int64(len(data)), records: b.records + entries}
	})
	if err != nil {
		return 0, err
	}
	return read, bad
}
