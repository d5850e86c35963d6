// Package store is connpipe's Redis layout, the one place that names keys
// and walks entries: the consumer writes by it, and admin's read-back and
// tally read by it.
//
// # Layout v2
//
// Records are kept in time buckets, one per second, each split by a hash
// of the source address into Shards lists:
//
//	<prefix>r2:<unix-second>:<shard>   a list of chunks (chunk.go)
//	<prefix>n:<unix-second>            how many records the instance stored in that second
//	<prefix>d:<producer>:<seq>         which records of batch (producer, seq) the instance holds
//
// A question about one source reads one list per second per instance: a
// 32nd of the window. A chunk writes what its records share once (the
// destination, a base time) and each entry in 9 to 13 bytes for IPv4; a list
// of chunks costs Redis little past its bytes (a string grown by APPEND
// keeps up to as much again as slack). The counters answer "how many" for
// a window without reading a record.
//
// A consumer writes a round's records to an instance with one Lua call
// (writeScript): it checks the batch marks first, and when some record of
// the write is already marked on the instance it writes nothing and
// returns the marks, so the consumer drops those records and writes the
// rest. Otherwise it pushes the chunks, adds to the counters and marks the
// records, every key with its expiry, atomically. Since a batch's records
// are routed by their place in the producer's stream (package routing), a
// second delivery of a batch sends each record to the instance that holds
// it: exactly once in effect, checked in the same round trip as the write.
//
// # Layout v1
//
// One Redis string per second,
//
//	<prefix>r:<unix-second>   the concatenated version 1 entries of package record
//
// written with APPEND and given PEXPIREAT in one Lua call. It is still
// read, so records written before an upgrade stay visible until they
// expire, and still written by a consumer set to STORE_LAYOUT=1 (for a
// rolling upgrade: upgrade admin first, which reads both).
//
// # Expiry
//
// A record's bucket is the second of max(capture time, ingest time) — see
// package record — so it stays readable for at least the retention window
// and is gone at most one second after it. The bucket is never later than
// the second the consumer received the record, so no key outlives that +
// RETENTION + 1 s whatever the record's timestamp says. Redis expires a
// whole bucket at once: no scanning, no per-record keys.
//
// The other keys under the prefix:
//
//	<prefix>stick:<hash key>:<16 hex digits>   a stick-table entry (package routing)
//	<prefix>probe                              a consumer's write probe of an instance
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix when none is configured.
const DefaultPrefix = "cp:"

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

// Shards is the number of lists each second of layout v2 is split into by
// source address. More shards make a source question read less but cost
// memory: a round's records are split into more, smaller chunks, each
// with its header, and more lists, each with its own overhead. Measured
// with 3,000,000 records over 5 minutes (TestMemoryPerRecord): 64 shards
// cost 17.1 bytes an IPv4 record, 32 cost 13.9–14.6.
const Shards = 1 << shardBits

const shardBits = 5

// Shard is the shard of source address a: the top bits of a
// multiplicative hash of its 16-byte form. It is part of the layout:
// changing it moves every source to another list.
func Shard(a netip.Addr) int {
	b := a.Unmap().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	h := (hi ^ bits.RotateLeft64(lo, 29)) * 0x9e3779b97f4a7c15
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	return int(h >> (64 - shardBits))
}

// ChunkKey is the key of the layout v2 list of second sec and shard.
func (l Layout) ChunkKey(sec int64, shard int) string {
	return l.Prefix + "r2:" + strconv.FormatInt(sec, 10) + ":" + strconv.Itoa(shard)
}

// CountKey is the key of the counter of records stored in second sec.
func (l Layout) CountKey(sec int64) string {
	return l.Prefix + "n:" + strconv.FormatInt(sec, 10)
}

// MarkKey is the key of the mark of batch id: a bitmap whose bit i (bit 7
// of byte 0 is record 0) is set when the instance holds the batch's record i.
func (l Layout) MarkKey(id record.ID) string {
	const digits = "0000000000000000"
	x := strconv.FormatUint(id.Producer, 16)
	return l.Prefix + "d:" + digits[len(x):] + x + ":" + strconv.FormatUint(id.Seq, 10)
}

// Buckets gathers the records of one write to one Redis instance.
type Buckets struct {
	// V1 makes Write use layout v1 (no chunks, counters or marks).
	V1 bool

	v1      map[int64][]byte // layout v1: entries by second
	free    [][]byte         // emptied buffers kept by Reset for reuse
	chunks  []chunk
	index   map[chunkKey]int
	counts  []secCount // records per second, a few seconds a write
	marks   []mark
	markIdx map[record.ID]int
	records int

	// The chunks of the last second and destination seen, by shard
	// (index+1, 0 for none), and the last batch's mark: most records of a
	// write share them, and these spare a map lookup per record.
	hot     chunkKey
	hotIdx  [Shards]int32
	lastID  record.ID
	lastMrk int
}

type secCount struct{ sec, n int64 }

type mark struct {
	id   record.ID
	bits []byte
}

// NewBuckets returns an empty set of buckets.
func NewBuckets() *Buckets {
	return &Buckets{v1: map[int64][]byte{}, index: map[chunkKey]int{}, markIdx: map[record.ID]int{}, lastMrk: -1}
}

// Add adds r, of bucket second sec, to the write.
func (b *Buckets) Add(sec int64, r *record.Record) {
	b.records++
	if b.V1 {
		buf, ok := b.v1[sec]
		if !ok {
			buf = b.buffer()
		}
		b.v1[sec] = record.AppendEntry(buf, r)
		return
	}
	k := chunkKeyOf(sec, r)
	b.chunks[b.chunkFor(k, r)].add(r)
	if n := len(b.counts); n > 0 && b.counts[n-1].sec == sec {
		b.counts[n-1].n++
		return
	}
	for j := range b.counts {
		if b.counts[j].sec == sec {
			b.counts[j].n++
			return
		}
	}
	b.counts = append(b.counts, secCount{sec, 1})
}

// chunkFor returns the index of the chunk of key k, starting it with r
// when there is none.
func (b *Buckets) chunkFor(k chunkKey, r *record.Record) int {
	shard := k.shard
	k.shard = 0
	if k != b.hot {
		b.hot, b.hotIdx = k, [Shards]int32{}
	} else if i := b.hotIdx[shard]; i > 0 {
		return int(i - 1)
	}
	k.shard = shard
	i, ok := b.index[k]
	if !ok {
		i = len(b.chunks)
		b.index[k] = i
		b.chunks = append(b.chunks, chunk{key: k, buf: b.buffer()})
		b.chunks[i].start(r)
	}
	b.hotIdx[shard] = int32(i + 1)
	return i
}

// AddMarked adds r, record i of the n records of batch id, to the write and
// marks it (layout v2; layout v1 keeps no marks).
func (b *Buckets) AddMarked(sec int64, r *record.Record, id record.ID, i, n int) {
	b.Add(sec, r)
	if b.V1 || id.IsZero() {
		return
	}
	m := b.lastMrk
	if m < 0 || id != b.lastID {
		var ok bool
		if m, ok = b.markIdx[id]; !ok {
			m = len(b.marks)
			b.markIdx[id] = m
			b.marks = append(b.marks, mark{id: id, bits: make([]byte, (n+7)/8)})
		}
		b.lastID, b.lastMrk = id, m
	}
	if i < len(b.marks[m].bits)*8 {
		b.marks[m].bits[i/8] |= 0x80 >> (i % 8)
	}
}

func (b *Buckets) buffer() []byte {
	if len(b.free) == 0 {
		return nil
	}
	buf := b.free[len(b.free)-1]
	b.free = b.free[:len(b.free)-1]
	return buf[:0]
}

// Len is the number of records added.
func (b *Buckets) Len() int { return b.records }

// Reset empties b, keeping its buffers.
func (b *Buckets) Reset() {
	keep := func(v []byte) {
		if cap(v) > 0 && len(b.free) < 256 {
			b.free = append(b.free, v[:0])
		}
	}
	for _, v := range b.v1 {
		keep(v)
	}
	for _, c := range b.chunks {
		keep(c.buf)
	}
	clear(b.v1)
	clear(b.index)
	clear(b.markIdx)
	b.chunks, b.marks, b.counts = b.chunks[:0], b.marks[:0], b.counts[:0]
	b.hot, b.hotIdx, b.lastMrk = chunkKey{}, [Shards]int32{}, -1
	b.records = 0
}

// Held is what an instance already held of a batch when a write found it
// marked: bit i of Bits (bit 7 of byte 0 is record 0) is set for each
// record i of batch ID that the instance stores.
type Held struct {
	ID   record.ID
	Bits []byte
}

// Has reports whether bit i of h is set.
func (h Held) Has(i int) bool { return i/8 < len(h.Bits) && h.Bits[i/8]&(0x80>>(i%8)) != 0 }

// writeScript writes a round's records to an instance (layout v2). KEYS:
// the chunks' lists, the counters, the marks. ARGV: the three counts, the
// marks' lifetime in ms, then (deadline, chunk) per list, (deadline,
// delta) per counter, and a bitmap per mark. If any mark already has a
// bit of its bitmap, nothing is written and the script returns {index of
// the mark, its value, …}; else it returns 0.
var writeScript = redis.NewScript(`
local nc, nn, nm, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ka, am = nc + nn, 5 + 2 * (nc + nn)
local held = {}
for m = 1, nm do
  local cur = redis.call('GET', KEYS[ka + m])
  if cur then
    local new = ARGV[am + m - 1]
    for i = 1, math.min(#cur, #new) do
      if bit.band(string.byte(cur, i), string.byte(new, i)) ~= 0 then
        held[#held + 1] = m - 1
        held[#held + 1] = cur
        break
      end
    end
  end
end
if #held > 0 then return held end
local a = 5
for i = 1, nc do
  redis.call('RPUSH', KEYS[i], ARGV[a + 1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[a])
  a = a + 2
end
for j = 1, nn do
  redis.call('INCRBY', KEYS[nc + j], ARGV[a + 1])
  redis.call('PEXPIREAT', KEYS[nc + j], ARGV[a])
  a = a + 2
end
for m = 1, nm do
  local k, new = KEYS[ka + m], ARGV[am + m - 1]
  local cur = redis.call('GET', k)
  if cur then
    local t = {}
    for i = 1, math.max(#cur, #new) do
      t[i] = string.char(bit.bor(string.byte(cur, i) or 0, string.byte(new, i) or 0))
    end
    new = table.concat(t)
  end
  redis.call('SET', k, new, 'PX', ttl)
end
return 0`)

// appendScript appends ARGV[1] to KEYS[1] and sets its absolute expiry in
// ms (layout v1).
var appendScript = redis.NewScript(`
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1`)

// Write writes b to rdb in one round trip. It returns nil, nil only when
// every record was stored with its expiry. When the instance already held
// some records of b's batches (a second delivery), it writes nothing and
// returns what it held: the caller drops those records and writes the
// rest. A failed write stored nothing (layout v2: one atomic script call)
// unless the error hides an answer that was lost (a timeout).
func (l Layout) Write(ctx context.Context, rdb redis.UniversalClient, b *Buckets) ([]Held, error) {
	if b.records == 0 {
		return nil, nil
	}
	script, run := writeScript, l.writeV2
	if b.V1 {
		script, run = appendScript, l.writeV1
	}
	held, err := run(ctx, rdb, b)
	if isNoScript(err) {
		// A restarted or new Redis has no script cache: load it and retry.
		if lerr := script.Load(ctx, rdb).Err(); lerr != nil {
			return nil, fmt.Errorf("load write script: %w", lerr)
		}
		held, err = run(ctx, rdb, b)
	}
	return held, err
}

func (l Layout) writeV2(ctx context.Context, rdb redis.UniversalClient, b *Buckets) ([]Held, error) {
	nc, nn, nm := len(b.chunks), len(b.counts), len(b.marks)
	keys := make([]string, 0, nc+nn+nm)
	args := make([]any, 4, 4+2*(nc+nn)+nm)
	args[0], args[1], args[2], args[3] = nc, nn, nm, l.Retention.Milliseconds()
	for i := range b.chunks {
		c := &b.chunks[i]
		keys = append(keys, l.ChunkKey(c.key.sec, c.key.shard))
		args = append(args, l.DeadlineMS(c.key.sec), c.buf)
	}
	for _, c := range b.counts {
		keys = append(keys, l.CountKey(c.sec))
		args = append(args, l.DeadlineMS(c.sec), c.n)
	}
	for _, m := range b.marks {
		keys = append(keys, l.MarkKey(m.id))
		args = append(args, m.bits)
	}
	v, err := writeScript.EvalSha(ctx, rdb, keys, args...).Result()
	if err != nil {
		return nil, err
	}
	list, ok := v.([]any)
	if !ok {
		return nil, nil
	}
	held := make([]Held, 0, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		m, _ := list[i].(int64)
		bits, _ := list[i+1].(string)
		if m < 0 || int(m) >= nm {
			return nil, fmt.Errorf("write script named mark %d of %d", m, nm)
		}
		held = append(held, Held{ID: b.marks[m].id, Bits: []byte(bits)})
	}
	return held, nil
}

func (l Layout) writeV1(ctx context.Context, rdb redis.UniversalClient, b *Buckets) ([]Held, error) {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sec, data := range b.v1 {
			if len(data) > 0 {
				appendScript.EvalSha(ctx, p, []string{l.BucketKey(sec)}, data, l.DeadlineMS(sec))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, c := range cmds {
		if c.Err() != nil {
			return nil, c.Err()
		}
	}
	return nil, nil
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// Filter selects records when reading back; zero fields match anything.
type Filter struct {
	Src, Dst string // IP in canonical text form
	Key      string
}

// filter is a Filter with its addresses parsed, so matching a record
// compares addresses rather than formatting them.
type filter struct {
	src, dst netip.Addr
	key      string
	none     bool // an address that does not parse matches nothing
}

func (f Filter) compile() filter {
	c := filter{key: f.Key}
	var err error
	if f.Src != "" {
		if c.src, err = netip.ParseAddr(f.Src); err != nil {
			c.none = true
		}
		c.src = c.src.Unmap()
	}
	if f.Dst != "" {
		if c.dst, err = netip.ParseAddr(f.Dst); err != nil {
			c.none = true
		}
		c.dst = c.dst.Unmap()
	}
	return c
}

func (c filter) match(r *record.Record) bool {
	switch {
	case c.none:
		return false
	case c.key != "" && r.Key != c.key:
		return false
	case c.src.IsValid() && r.Src != c.src:
		return false
	case c.dst.IsValid() && r.Dst != c.dst:
		return false
	}
	return true
}

// matchDst is the chunk-level test: whether a chunk's destination can hold
// a match.
func (c filter) matchDst(dst netip.Addr, _ uint16) bool {
	return !c.none && (!c.dst.IsValid() || dst == c.dst)
}

// Read calls fn for every record of both layouts in the buckets of seconds
// from..to (inclusive) that passes f.
func (l Layout) Read(ctx context.Context, rdb redis.Cmdable, from, to int64, f Filter, fn func(*record.Record)) error {
	_, err := l.Scan(ctx, rdb, from, to, f, func(r *record.Record) bool { fn(r); return true })
	return err
}

// keysPerCall bounds the keys one pipelined read asks for.
const keysPerCall = 512

// Scan calls fn, oldest second first, for every record of both layouts in
// seconds from..to that passes f, until fn returns false; it returns the
// bytes of records it fetched from Redis. It first asks which seconds
// hold anything (the layout v2 counters and the v1 bucket lengths, one
// round trip), then reads only those, up to keysPerCall keys a round
// trip (growing from one second): with a source in f, that source's shard
// alone (a 32nd of the window); a chunk whose destination does not match
// is skipped undecoded.
func (l Layout) Scan(ctx context.Context, rdb redis.Cmdable, from, to int64, f Filter, fn func(*record.Record) bool) (int64, error) {
	if to < from {
		return 0, nil
	}
	c := f.compile()
	shards := make([]int, 0, Shards)
	if c.src.IsValid() {
		shards = append(shards, Shard(c.src))
	} else {
		for i := range Shards {
			shards = append(shards, i)
		}
	}
	v2, v1, err := l.occupied(ctx, rdb, from, to)
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
	// as many, up to keysPerCall keys: a question that stops at a small
	// limit reads little past it, and a whole-window read takes few round
	// trips.
	budget := len(shards)
	for len(v2)+len(v1) > 0 && more {
		// The next seconds in time order, up to budget keys.
		var part1, part2 []int64
		keys := 0
		for keys < budget && len(v2)+len(v1) > 0 {
			if len(v1) > 0 && (len(v2) == 0 || v1[0] <= v2[0]) {
				part1, v1 = append(part1, v1[0]), v1[1:]
				keys++
			} else {
				part2, v2 = append(part2, v2[0]), v2[1:]
				keys += len(shards)
			}
		}
		n, err := l.scanSeconds(ctx, rdb, part1, part2, shards, c, emit)
		fetched += n
		if err != nil {
			return fetched, err
		}
		budget = min(2*budget, max(keysPerCall, len(shards)))
	}
	return fetched, nil
}

// occupied returns the seconds of from..to that hold records of layout v2
// (a counter above 0) and of layout v1 (a bucket), in one round trip.
func (l Layout) occupied(ctx context.Context, rdb redis.Cmdable, from, to int64) (v2, v1 []int64, err error) {
	keys := make([]string, 0, to-from+1)
	for sec := from; sec <= to; sec++ {
		keys = append(keys, l.CountKey(sec))
	}
	var counts *redis.SliceCmd
	lens := make([]*redis.IntCmd, 0, len(keys))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		counts = p.MGet(ctx, keys...)
		for sec := from; sec <= to; sec++ {
			lens = append(lens, p.StrLen(ctx, l.BucketKey(sec)))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("find seconds %d..%d: %w", from, to, err)
	}
	for i, v := range counts.Val() {
		if s, ok := v.(string); ok && s != "0" {
			v2 = append(v2, from+int64(i))
		}
	}
	for i, c := range lens {
		if c.Val() > 0 {
			v1 = append(v1, from+int64(i))
		}
	}
	return v2, v1, nil
}

// scanSeconds reads the v1 buckets of seconds s1 and the v2 lists of
// seconds s2 (their shards) in one pipeline, in time order.
func (l Layout) scanSeconds(ctx context.Context, rdb redis.Cmdable, s1, s2 []int64, shards []int, c filter, emit func(*record.Record)) (int64, error) {
	v1 := make([]*redis.StringCmd, 0, len(s1))
	v2 := make([]*redis.StringSliceCmd, 0, len(s2)*len(shards))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sec := range s1 {
			v1 = append(v1, p.Get(ctx, l.BucketKey(sec)))
		}
		for _, sec := range s2 {
			for _, sh := range shards {
				v2 = append(v2, p.LRange(ctx, l.ChunkKey(sec, sh), 0, -1))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read records: %w", err)
	}
	var fetched int64
	for i, cmd := range v1 {
		data, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired since occupied looked
		}
		if err != nil {
			return fetched, fmt.Errorf("read %s: %w", l.BucketKey(s1[i]), err)
		}
		fetched += int64(len(data))
		if err := record.DecodeEntries(data, emit); err != nil {
			return fetched, fmt.Errorf("bucket %s: %w", l.BucketKey(s1[i]), err)
		}
	}
	for i, cmd := range v2 {
		if err := cmd.Err(); err != nil {
			return fetched, fmt.Errorf("read %s: %w", cmd.Args()[1], err)
		}
		sec := s2[i/len(shards)]
		for _, ch := range cmd.Val() {
			fetched += int64(len(ch))
			// Read in place: the decoder only reads, and keeps nothing.
			b := unsafe.Slice(unsafe.StringData(ch), len(ch))
			if err := DecodeChunk(b, sec, c.matchDst, emit); err != nil {
				return fetched, fmt.Errorf("list %s: %w", cmd.Args()[1], err)
			}
		}
	}
	return fetched, nil
}

// Count returns how many records an instance holds in seconds from..to,
// from the counters of layout v2 and the entries of layout v1 buckets
// (which have no counters), and the bytes it fetched to learn it.
func (l Layout) Count(ctx context.Context, rdb redis.Cmdable, from, to int64) (n, fetched int64, err error) {
	per, err := l.Counters(ctx, rdb, from, to)
	if err != nil {
		return 0, 0, err
	}
	for _, c := range per {
		if c > 0 {
			n += c
			fetched += int64(len(strconv.FormatInt(c, 10)))
		}
	}
	sizes, err := l.Sizes(ctx, rdb, from, to)
	if err != nil {
		return 0, fetched, err
	}
	for i, size := range sizes {
		if size == 0 {
			continue
		}
		// A v1 bucket (from before an upgrade): count its entries.
		key := l.BucketKey(from + int64(i))
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

// Counters returns the layout v2 counter of each second of from..to: the
// records the instance stored in it (0 where none), with one MGET.
func (l Layout) Counters(ctx context.Context, rdb redis.Cmdable, from, to int64) ([]int64, error) {
	if to < from {
		return nil, nil
	}
	keys := make([]string, 0, to-from+1)
	for sec := from; sec <= to; sec++ {
		keys = append(keys, l.CountKey(sec))
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("mget %s..%s: %w", keys[0], keys[len(keys)-1], err)
	}
	out := make([]int64, len(keys))
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[i], _ = strconv.ParseInt(s, 10, 64)
		}
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
