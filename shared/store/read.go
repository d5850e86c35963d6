package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/redis/go-redis/v9"
)

// Read calls fn for every record of both layouts in the buckets of seconds
// from..to (inclusive) that passes f.
func (l Layout) Read(ctx context.Context, rdb redis.Cmdable, from, to int64, f Filter, fn func(*record.Record)) error {
	_, err := l.Scan(ctx, rdb, from, to, f, func(r *record.Record) bool { fn(r); return true })
	return err
}

// keysPerCall bounds the keys one pipelined read asks for.
const keysPerCall = 512

// second is what an instance holds of one second: how many records, in
// which lists.
type second struct {
	sec    int64
	bits   int  // the lists are split 1 << bits ways; -1: none
	legacy bool // the previous release's 32 lists hold records
	v1     bool // a layout v1 bucket holds records
	n      int64
}

// readKey is one key a read fetches: a layout v1 bucket, or a list.
type readKey struct {
	sec int64
	key string
	v1  bool
}

// keys appends the keys of s that a read with filter c fetches: with a
// source, its list alone.
func (l Layout) keys(out []readKey, s second, c filter) []readKey {
	if s.v1 {
		out = append(out, readKey{sec: s.sec, key: l.BucketKey(s.sec), v1: true})
	}
	var h uint64
	if c.src.IsValid() {
		h = AddrHash(c.src)
	}
	lists := func(bits int, name func(shard int) string) {
		if c.src.IsValid() {
			out = append(out, readKey{sec: s.sec, key: name(shardOf(h, bits))})
			return
		}
		for i := range 1 << bits {
			out = append(out, readKey{sec: s.sec, key: name(i)})
		}
	}
	if s.bits >= 0 {
		lists(s.bits, func(i int) string { return l.ChunkKey(s.sec, i, s.bits) })
	}
	if s.legacy {
		lists(legacyShardBits, func(i int) string { return l.legacyChunkKey(s.sec, i) })
	}
	return out
}

// Scan calls fn, oldest second first, for every record of both layouts in
// seconds from..to that passes f, until fn returns false; it returns the
// bytes of records it fetched from Redis. It first asks which seconds
// hold anything and how they are split (the counters and the v1 bucket
// lengths, one round trip), then reads only those, up to keysPerCall keys
// a round trip (growing from one second): with a source in f, that
// source's list alone; a chunk whose destination does not match is
// skipped undecoded.
func (l Layout) Scan(ctx context.Context, rdb redis.Cmdable, from, to int64, f Filter, fn func(*record.Record) bool) (int64, error) {
	if to < from {
		return 0, nil
	}
	c := f.compile()
	secs, err := l.occupied(ctx, rdb, from, to)
	if err != nil {
		return 0, err
	}
	more := true
	emit := func(r *record.Record) {
		if more && c.match(r) {
			more = fn(r)
		}
	}
	var fetched int64
	// The first round trip asks for one second, each next one for twice
	// as many keys, up to keysPerCall: a question that stops at a small
	// limit reads little past it, and a whole-window read takes few round
	// trips.
	budget := 0
	var keys []readKey
	for len(secs) > 0 && more {
		keys = keys[:0]
		for len(secs) > 0 && (len(keys) == 0 || len(keys) < budget) {
			keys, secs = l.keys(keys, secs[0], c), secs[1:]
		}
		n, err := l.fetch(ctx, rdb, keys, c, emit)
		fetched += n
		if err != nil {
			return fetched, err
		}
		budget = min(2*max(budget, len(keys)), keysPerCall)
	}
	return fetched, nil
}

// ListKeys returns the keys of the lists that a read of seconds from..to
// with filter f fetches (layout v2), in the order it fetches them.
func (l Layout) ListKeys(ctx context.Context, rdb redis.Cmdable, from, to int64, f Filter) ([]string, error) {
	secs, err := l.occupied(ctx, rdb, from, to)
	if err != nil {
		return nil, err
	}
	var keys []readKey
	c := f.compile()
	for _, s := range secs {
		keys = l.keys(keys, s, c)
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !k.v1 {
			out = append(out, k.key)
		}
	}
	return out, nil
}

// occupied returns the seconds of from..to that hold records, with their
// split, in one round trip: the counters of layout v2 (this release's and
// the previous one's) and the lengths of the v1 buckets.
func (l Layout) occupied(ctx context.Context, rdb redis.Cmdable, from, to int64) ([]second, error) {
	span := int(to - from + 1)
	cur, old := make([]string, 0, span), make([]string, 0, span)
	for sec := from; sec <= to; sec++ {
		cur, old = append(cur, l.CountKey(sec)), append(old, l.legacyCountKey(sec))
	}
	var cs, ns *redis.SliceCmd
	lens := make([]*redis.IntCmd, 0, span)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cs, ns = p.MGet(ctx, cur...), p.MGet(ctx, old...)
		for sec := from; sec <= to; sec++ {
			lens = append(lens, p.StrLen(ctx, l.BucketKey(sec)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find seconds %d..%d: %w", from, to, err)
	}
	var out []second
	for i := range span {
		s := second{sec: from + int64(i), bits: -1, v1: lens[i].Val() > 0}
		if v := intOf(cs.Val()[i]); v > 0 {
			s.bits, s.n = int(v%16), v/16
		}
		if v := intOf(ns.Val()[i]); v > 0 {
			s.legacy, s.n = true, s.n+v
		}
		if s.bits >= 0 || s.legacy || s.v1 {
			out = append(out, s)
		}
	}
	return out, nil
}

func intOf(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// fetch reads keys in one pipeline and decodes them in order.
func (l Layout) fetch(ctx context.Context, rdb redis.Cmdable, keys []readKey, c filter, emit func(*record.Record)) (int64, error) {
	v1 := make([]*redis.StringCmd, len(keys))
	v2 := make([]*redis.StringSliceCmd, len(keys))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			if k.v1 {
				v1[i] = p.Get(ctx, k.key)
			} else {
				v2[i] = p.LRange(ctx, k.key, 0, -1)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read records: %w", err)
	}
	var fetched int64
	for i, k := range keys {
		if k.v1 {
			data, err := v1[i].Bytes()
			if errors.Is(err, redis.Nil) {
				continue // expired since occupied looked
			}
			if err != nil {
				return fetched, fmt.Errorf("read %s: %w", k.key, err)
			}
			fetched += int64(len(data))
			if err := record.DecodeEntries(data, emit); err != nil {
				return fetched, fmt.Errorf("bucket %s: %w", k.key, err)
			}
			continue
		}
		if err := v2[i].Err(); err != nil {
			return fetched, fmt.Errorf("read %s: %w", k.key, err)
		}
		for _, ch := range v2[i].Val() {
			fetched += int64(len(ch))
			// Read in place: the decoder only reads, and keeps nothing.
			b := unsafe.Slice(unsafe.StringData(ch), len(ch))
			if err := DecodeChunk(b, k.sec, c.matchDst, emit); err != nil {
				return fetched, fmt.Errorf("list %s: %w", k.key, err)
			}
		}
	}
	return fetched, nil
}

// Count returns how many records an instance holds in seconds from..to,
// from the counters of layout v2 and the entries of layout v1 buckets
// (which have no counters), and the bytes it fetched to learn it. The
// counters and the v1 bucket lengths come in one round trip (occupied).
func (l Layout) Count(ctx context.Context, rdb redis.Cmdable, from, to int64) (n, fetched int64, err error) {
	if to < from {
		return 0, 0, nil
	}
	secs, err := l.occupied(ctx, rdb, from, to)
	if err != nil {
		return 0, 0, err
	}
	for _, s := range secs {
		if s.n > 0 {
			n += s.n
			fetched += int64(len(strconv.FormatInt(s.n, 10)))
		}
		if !s.v1 {
			continue
		}
		// A v1 bucket (from before an upgrade): count its entries.
		key := l.BucketKey(s.sec)
		data, err := rdb.Get(ctx, key).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return n, fetched, fmt.Errorf("read %s: %w", key, err)
		}
		fetched += int64(len(data))
		if err := record.DecodeEntries(data, func(*record.Record) { n++ }); err != nil {
			return n, fetched, fmt.Errorf("bucket %s: %w", key, err)
		}
	}
	return n, fetched, nil
}

// Counters returns, for each second of from..to, the records the instance
// stored in it in layout v2 (0 where none), from the counters alone.
func (l Layout) Counters(ctx context.Context, rdb redis.Cmdable, from, to int64) ([]int64, error) {
	if to < from {
		return nil, nil
	}
	keys := make([]string, 0, 2*(to-from+1))
	for sec := from; sec <= to; sec++ {
		keys = append(keys, l.CountKey(sec), l.legacyCountKey(sec))
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("mget %s..%s: %w", keys[0], keys[len(keys)-1], err)
	}
	out := make([]int64, to-from+1)
	for i := range out {
		out[i] = intOf(vals[2*i])/16 + intOf(vals[2*i+1])
	}
	return out, nil
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

// Purge deletes every record key of seconds from..to on an instance: the
// buckets, lists and counters of every layout (not the batch marks, which
// expire with the retention).
func (l Layout) Purge(ctx context.Context, rdb redis.Cmdable, from, to int64) error {
	secs, err := l.occupied(ctx, rdb, from, to)
	if err != nil {
		return err
	}
	var keys []readKey
	for _, s := range secs {
		keys = l.keys(keys, s, filter{})
	}
	names := make([]string, 0, len(keys)+2*int(to-from+1))
	for _, k := range keys {
		names = append(names, k.key)
	}
	for sec := from; sec <= to; sec++ {
		names = append(names, l.CountKey(sec), l.legacyCountKey(sec))
	}
	for len(names) > 0 {
		n := min(len(names), keysPerCall)
		if err := rdb.Del(ctx, names[:n]...).Err(); err != nil {
			return fmt.Errorf("delete %s…: %w", names[0], err)
		}
		names = names[n:]
	}
	return nil
}
