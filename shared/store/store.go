// Package store is connpipe's Redis layout, the one place that names keys
// and walks entries: the consumer writes by it, and admin's read-back and
// tally read by it.
//
// Records are kept in time buckets: one Redis string per second,
//
//	<prefix>r:<unix-second>   the concatenated binary entries of package record
//
// written with APPEND and given PEXPIREAT (second+1)·1000 + retention, in one
// Lua call so a bucket never exists without its expiry. A record's bucket is
// the second of max(capture time, ingest time) — see package record — so it
// stays readable for at least the retention window and is gone at most one
// second after it. The bucket is never later than the second the consumer
// received the record, so no key outlives that + RETENTION + 1 s whatever
// the record's timestamp says. Redis expires a whole bucket at once: no
// scanning, no per-record keys (an IPv4 entry costs 25 bytes plus the string's slack).
//
// The other keys under the prefix:
//
//	<prefix>stick:<hash key>:<16 hex digits>   a stick-table entry (package routing)
//	<prefix>probe                              a consumer's write probe of an instance
package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix when none is configured.
const DefaultPrefix = "cp:"

// appendScript appends ARGV[1] to KEYS[1] and sets its absolute expiry in ms.
var appendScript = redis.NewScript(`
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1`)

// Layout names keys and computes deadlines.
type Layout struct {
	Prefix    string
	Retention time.Duration
}

// BucketKey is the key of the bucket for Unix second sec.
func (l Layout) BucketKey(sec int64) string {
	return l.Prefix + "r:" + strconv.FormatInt(sec, 10)
}

// Bucket is the bucket second of a record captured at ts in a batch that
// entered the pipeline at ingest and was received by the consumer at
// received (all Unix ns; 0 if unknown): the second of max(ts, ingest),
// but never later than received. A record's own timestamp cannot push its
// bucket, and so its expiry, past the time it arrived: a record stamped in
// the year 2100 is stored in the bucket of the second it was received,
// expires RETENTION (+ at most 1 s) later and is read back with that
// second's records.
func Bucket(ts, ingest, received int64) int64 {
	t := max(ts, ingest)
	if received > 0 {
		t = min(t, received)
	}
	return t / int64(time.Second)
}

// StickKey is the key of the stick-table entry of key hash h under the hash
// key kind (control.KeySrc …). Its value is the name of the backend that
// owns the key; it lives on the stick home (package routing).
func (l Layout) StickKey(kind string, h uint64) string {
	const digits = "0000000000000000"
	x := strconv.FormatUint(h, 16)
	return l.Prefix + "stick:" + kind + ":" + digits[len(x):] + x
}

// ProbeKey is the short-lived key a consumer writes to test that an
// instance takes writes again.
func (l Layout) ProbeKey() string { return l.Prefix + "probe" }

// DeadlineMS is the absolute expiry, Unix ms, of bucket sec.
func (l Layout) DeadlineMS(sec int64) int64 {
	return (sec+1)*1000 + l.Retention.Milliseconds()
}

// Buckets groups entries by bucket second, for one write to one Redis
// instance.
type Buckets struct {
	buckets map[int64][]byte
	free    [][]byte // emptied bucket buffers kept by Reset for reuse
	records int
}

// NewBuckets returns an empty set of buckets.
func NewBuckets() *Buckets { return &Buckets{buckets: make(map[int64][]byte, 2)} }

// Add appends r to the bucket of second sec.
func (b *Buckets) Add(sec int64, r *record.Record) {
	buf, ok := b.buckets[sec]
	if !ok && len(b.free) > 0 {
		buf, b.free = b.free[len(b.free)-1], b.free[:len(b.free)-1]
	}
	b.buckets[sec] = record.AppendEntry(buf, r)
	b.records++
}

// Len is the number of records added.
func (b *Buckets) Len() int { return b.records }

// Reset empties b, keeping its buffers.
func (b *Buckets) Reset() {
	for _, v := range b.buckets {
		if cap(v) > 0 && len(b.free) < 16 {
			b.free = append(b.free, v[:0])
		}
	}
	clear(b.buckets)
	b.records = 0
}

// Write appends b to its buckets on rdb with one round trip (a pipeline of
// one script call per bucket). It returns nil only when every bucket was
// appended and given its expiry. A failed write may have stored part of
// b: the caller retries it whole, so delivery is at least once.
func (l Layout) Write(ctx context.Context, rdb redis.UniversalClient, b *Buckets) error {
	if b.records == 0 {
		return nil
	}
	err := l.pipeline(ctx, rdb, b)
	if isNoScript(err) {
		// A restarted or new Redis has no script cache: load it and retry.
		if lerr := appendScript.Load(ctx, rdb).Err(); lerr != nil {
			return fmt.Errorf("load append script: %w", lerr)
		}
		err = l.pipeline(ctx, rdb, b)
	}
	return err
}

func (l Layout) pipeline(ctx context.Context, rdb redis.UniversalClient, b *Buckets) error {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sec, data := range b.buckets {
			if len(data) > 0 {
				appendScript.EvalSha(ctx, p, []string{l.BucketKey(sec)}, data, l.DeadlineMS(sec))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if c.Err() != nil {
			return c.Err()
		}
	}
	return nil
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// Filter selects records when reading back; zero fields match anything.
type Filter struct {
	Src, Dst string // IP in canonical text form
	Key      string
}

// Match reports whether r passes f.
func (f Filter) Match(r *record.Record) bool {
	if f.Key != "" && r.Key != f.Key {
		return false
	}
	if f.Src != "" && r.Src.String() != f.Src {
		return false
	}
	if f.Dst != "" && r.Dst.String() != f.Dst {
		return false
	}
	return true
}

// Read calls fn for every record in the buckets of seconds from..to
// (inclusive) that passes f. It reads bucketsPerCall buckets per MGET.
func (l Layout) Read(ctx context.Context, rdb redis.Cmdable, from, to int64, f Filter, fn func(*record.Record)) error {
	const bucketsPerCall = 16
	for lo := from; lo <= to; lo += bucketsPerCall {
		hi := min(lo+bucketsPerCall-1, to)
		keys := make([]string, 0, hi-lo+1)
		for s := lo; s <= hi; s++ {
			keys = append(keys, l.BucketKey(s))
		}
		vals, err := rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return fmt.Errorf("mget %s..%s: %w", keys[0], keys[len(keys)-1], err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			err := record.DecodeEntries([]byte(s), func(r *record.Record) {
				if f.Match(r) {
					fn(r)
				}
			})
			if err != nil {
				return fmt.Errorf("bucket %s: %w", keys[i], err)
			}
		}
	}
	return nil
}

// Span is a byte range [From, To) of the bucket of second Sec: what it
// gained since a reader last read it, as buckets only grow by whole
// entries until they expire.
type Span struct {
	Sec, From, To int64
}

// Sizes returns the length in bytes of the buckets of seconds from..to (0
// for one that does not exist), one pipelined STRLEN each.
func (l Layout) Sizes(ctx context.Context, rdb redis.Cmdable, from, to int64) ([]int64, error) {
	cmds := make([]*redis.IntCmd, 0, to-from+1)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sec := from; sec <= to; sec++ {
			cmds = append(cmds, p.StrLen(ctx, l.BucketKey(sec)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("strlen: %w", err)
	}
	out := make([]int64, len(cmds))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// ReadSpans reads the bytes of every span, one pipelined GETRANGE each, and
// calls fn with each span's bytes (shorter than asked if the bucket
// expired meanwhile) and the entries in them. An error decoding a span's
// entries is passed to fn with the entries that decoded before it.
func (l Layout) ReadSpans(ctx context.Context, rdb redis.Cmdable, spans []Span, fn func(sp Span, data []byte, entries int64, err error)) error {
	if len(spans) == 0 {
		return nil
	}
	cmds := make([]*redis.StringCmd, len(spans))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sp := range spans {
			cmds[i] = p.GetRange(ctx, l.BucketKey(sp.Sec), sp.From, sp.To-1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("getrange: %w", err)
	}
	for i, sp := range spans {
		data, _ := cmds[i].Bytes()
		var n int64
		err := record.DecodeEntries(data, func(*record.Record) { n++ })
		if err != nil {
			err = fmt.Errorf("bucket %s from byte %d: %w", l.BucketKey(sp.Sec), sp.From, err)
		}
		fn(sp, data, n, err)
	}
	return nil
}
