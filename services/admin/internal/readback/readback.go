// Package readback reads stored records back from every Redis instance of
// the routing table.
//
// Records sit in per-second buckets (package store), keyed by the second
// they entered the pipeline: max(capture time, ingest time). A window
// [since, until] therefore selects by ingest second — a replayed old
// capture is found by when it was replayed, and its records keep their own
// capture timestamps. Only the last RETENTION seconds can hold anything, so
// the window is clamped to that and never scans dead buckets.
package readback

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// DefaultLimit bounds the records of one query when none is given.
const DefaultLimit = 10000

// MaxLimit bounds any query: at about 150 bytes of JSON a record, an
// answer of at most 15 MB, and as many records held per backend.
const MaxLimit = 100_000

// ErrBadQuery wraps every query error.
var ErrBadQuery = errors.New("bad query")

// Query selects records.
type Query struct {
	Since, Until time.Time // inclusive, by bucket second
	Src, Dst     string    // IP, empty for any
	Key          string    // payload key, empty for any
	Limit        int       // at most this many records in all (0: DefaultLimit)
}

// Item is one record found, with the backend that held it.
type Item struct {
	Backend string
	Record  record.Record
}

// Result is what a query found.
type Result struct {
	Items          []Item         // by capture time
	CountByBackend map[string]int // records returned per backend
	Truncated      bool           // more records matched than Limit
	Errors         map[string]string
	// Fetched is the bytes of records read from Redis to answer.
	Fetched int64
}

// Counted is what a count found.
type Counted struct {
	ByBackend map[string]int64 // records held per backend
	Total     int64
	// FromCounters is true when the answer came from the per-second
	// counters (a plain window), false when records were read and matched.
	FromCounters bool
	Fetched      int64 // bytes read from Redis to answer
	Errors       map[string]string
}

// Searcher runs queries over the Redis instances of a routing table.
type Searcher struct {
	Layout store.Layout
	// Client gives the Redis client of an instance's address
	// (redisconn.Pool.Cmdable).
	Client func(addr string) redis.Cmdable
	Now    func() time.Time
}

// ParseIP canonicalizes an IP filter as the store compares it; "" stays "".
func ParseIP(field, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("%w: %s %q is not an IP address", ErrBadQuery, field, s)
	}
	return a.Unmap().WithZone("").String(), nil
}

// ParseTime reads a window bound: a duration back from now ("90s", "5m"),
// an RFC 3339 time, or Unix seconds. Empty gives def.
func ParseTime(field, s string, now, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(sec, 0), nil
	}
	return time.Time{}, fmt.Errorf("%w: %s %q: want a duration back from now (90s, 5m), an RFC 3339 time or Unix seconds", ErrBadQuery, field, s)
}

// Window is the range of bucket seconds a query reads, clamped to what
// retention can still hold. Empty when from > to.
func (r *Searcher) Window(q Query) (from, to int64) {
	now := r.now()
	oldest := now.Add(-r.Layout.Retention).Unix() - 1
	from, to = q.Since.Unix(), q.Until.Unix()
	return max(from, oldest), to
}

// window checks q's bounds and returns the seconds to read.
func (r *Searcher) window(q Query) (from, to int64, err error) {
	if q.Until.Before(q.Since) {
		return 0, 0, fmt.Errorf("%w: until %s is before since %s", ErrBadQuery, q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339))
	}
	from, to = r.Window(q)
	if to-from > 7*24*3600 {
		return 0, 0, fmt.Errorf("%w: window of %d seconds is too long", ErrBadQuery, to-from)
	}
	return from, to, nil
}

// Count counts the records of q's window that pass its filter on every
// backend, concurrently, with no limit. A plain window (no filter) is
// answered from the per-second counters, reading no record. A backend that
// fails is reported in Counted.Errors; the others still answer.
func (r *Searcher) Count(ctx context.Context, backends []control.Backend, q Query) (Counted, error) {
	from, to, err := r.window(q)
	if err != nil {
		return Counted{}, err
	}
	f := store.Filter{Src: q.Src, Dst: q.Dst, Key: q.Key}
	plain := f == store.Filter{}
	type part struct {
		n, fetched int64
		err        error
	}
	parts := make([]part, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Go(func() {
			p := &parts[i]
			rdb := r.Client(b.Addr)
			if plain {
				p.n, p.fetched, p.err = r.Layout.Count(ctx, rdb, from, to)
				return
			}
			p.fetched, p.err = r.Layout.Scan(ctx, rdb, from, to, f, func(*record.Record) bool { p.n++; return true })
		})
	}
	wg.Wait()
	res := Counted{ByBackend: make(map[string]int64, len(backends)), FromCounters: plain}
	for i, p := range parts {
		if p.err != nil {
			res.Errors = noteError(res.Errors, backends[i], p.err)
			continue
		}
		res.ByBackend[backends[i].Name] = p.n
		res.Total += p.n
		res.Fetched += p.fetched
	}
	return res, nil
}

// noteError adds why backend b could not be read to errs (made when nil),
// its address and the error with every password masked: answers and the
// CLI show it.
func noteError(errs map[string]string, b control.Backend, err error) map[string]string {
	if errs == nil {
		errs = map[string]string{}
	}
	errs[b.Name] = redact.Text(fmt.Sprintf("%s: %v", redact.Addr(b.Addr), err))
	return errs
}

func (r *Searcher) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Search runs q against every backend of the table, concurrently. A backend
// that fails is reported in Result.Errors; the others still answer. It
// returns an error only for a bad query.
func (r *Searcher) Search(ctx context.Context, backends []control.Backend, q Query) (Result, error) {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	if limit < 0 || limit > MaxLimit {
		return Result{}, fmt.Errorf("%w: limit %d out of range 1..%d", ErrBadQuery, q.Limit, MaxLimit)
	}
	from, to, err := r.window(q)
	if err != nil {
		return Result{}, err
	}
	f := store.Filter{Src: q.Src, Dst: q.Dst, Key: q.Key}

	type part struct {
		items     []Item
		truncated bool
		fetched   int64
		err       error
	}
	parts := make([]part, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[i]
			rdb := r.Client(b.Addr)
			p.fetched, p.err = r.Layout.Scan(ctx, rdb, from, to, f, func(rec *record.Record) bool {
				if len(p.items) == limit {
					p.truncated = true
					return false
				}
				p.items = append(p.items, Item{Backend: b.Name, Record: *rec})
				return true
			})
		}()
	}
	wg.Wait()

	res := Result{CountByBackend: make(map[string]int, len(backends))}
	for i, p := range parts {
		if p.err != nil {
			res.Errors = noteError(res.Errors, backends[i], p.err)
		}
		res.Items = append(res.Items, p.items...)
		res.Truncated = res.Truncated || p.truncated
		res.Fetched += p.fetched
	}
	slices.SortStableFunc(res.Items, func(a, b Item) int {
		return cmp.Or(cmp.Compare(a.Record.TS, b.Record.TS), cmp.Compare(a.Backend, b.Backend))
	})
	if len(res.Items) > limit {
		res.Items, res.Truncated = res.Items[:limit], true
	}
	for _, b := range backends {
		res.CountByBackend[b.Name] = 0
	}
	for _, it := range res.Items {
		res.CountByBackend[it.Backend]++
	}
	return res, nil
}
