package store

import (
	"context"
	"fmt"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/redis/go-redis/v9"
)

// Buckets gathers the records of one write to one Redis instance. Keep one
// per instance and Reset it between writes: it remembers how the instance
// splits recent seconds, and how many records they hold, across writes.
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

	// Per second, the instance's split (log2 of its lists) and the
	// records it held at the last write, from the write script's answers.
	split map[int64]secSplit
	// lastWrite is how many records the last write stored: the size the
	// split of a new second allows for (ShardBits).
	lastWrite int64

	// The chunks of the last two (second, destination) pairs seen, by
	// shard, and the last batch's mark: most records of a write share
	// them (two: a capture that records both directions), and these spare
	// a map lookup per record.
	hot     [2]hotChunks
	hotNext int
	hotSec  int64
	hotBits int
	lastID  record.ID
	lastMrk int
}

type secCount struct {
	sec, n int64
	bits   int
}

// hotChunks are the chunks of one (second, destination) by shard: the
// index+1 of each in Buckets.chunks, 0 for none yet.
type hotChunks struct {
	key   chunkKey // shard 0
	idx   []int32
	valid bool
}

type secSplit struct {
	bits int
	n    int64
}

type mark struct {
	id   record.ID
	bits []byte
}

// splitMemory is how many seconds a Buckets remembers the split of.
const splitMemory = 64

// NewBuckets returns an empty set of buckets.
func NewBuckets() *Buckets {
	return &Buckets{v1: map[int64][]byte{}, index: map[chunkKey]int{}, markIdx: map[record.ID]int{},
		split: map[int64]secSplit{}, lastMrk: -1, hotSec: -1}
}

// Add adds r, of bucket second sec, to the write.
func (b *Buckets) Add(sec int64, r *record.Record) { b.AddMarked(sec, r, record.ID{}, 0, 0) }

// AddMarked adds r, record i of the n records of batch id, to the write and
// marks it (layout v2; layout v1 keeps no marks).
func (b *Buckets) AddMarked(sec int64, r *record.Record, id record.ID, i, n int) {
	b.records++
	if b.V1 {
		buf, ok := b.v1[sec]
		if !ok {
			buf = b.buffer()
		}
		b.v1[sec] = record.AppendEntry(buf, r)
		return
	}
	b.add(sec, r)
	if !id.IsZero() {
		b.mark(id, i, n)
	}
}

// add adds r to its chunk and its second's count.
func (b *Buckets) add(sec int64, r *record.Record) {
	if sec != b.hotSec {
		b.hotSec, b.hotBits = sec, b.bitsOf(sec)
	}
	shard := 0
	if b.hotBits > 0 {
		shard = shardOf(AddrHash(r.Src), b.hotBits)
	}
	// Most records of a write share a second and a destination: their
	// chunks are found by shard alone.
	flags := chunkFlags(r)
	for j := range b.hot {
		h := &b.hot[j]
		if h.valid && h.key.sec == sec && h.key.bits == b.hotBits && h.key.dst == r.Dst && h.key.port == r.DstPort && h.key.flags == flags {
			if i := h.idx[shard]; i > 0 {
				b.chunks[i-1].add(r)
				b.count(sec)
				return
			}
			break
		}
	}
	k := chunkKey{sec: sec, shard: shard, bits: b.hotBits, dst: r.Dst, port: r.DstPort, flags: flags}
	b.chunks[b.chunkFor(k, r)].add(r)
	b.count(sec)
}

// bitsOf is the split of second sec: the instance's when a write learnt
// it, else a guess made as the write script decides, from what the
// instance held in the seconds before at the last writes to them.
func (b *Buckets) bitsOf(sec int64) int {
	if s, ok := b.split[sec]; ok {
		return s.bits
	}
	var n int64
	for d := range int64(splitHistory) {
		n = max(n, b.split[sec-1-d].n)
	}
	return ShardBits(n, b.lastWrite)
}

// splitHistory is how many seconds before a new second its split is
// judged from: the busiest of them. The second just before may still be
// filling (capture batches, consumers' rounds in flight); three seconds
// back, the last of them is complete.
const splitHistory = 3

func (b *Buckets) count(sec int64) {
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
	b.counts = append(b.counts, secCount{sec: sec, n: 1, bits: b.hotBits})
}

// chunkFor returns the index of the chunk of key k, starting it with r
// when there is none.
func (b *Buckets) chunkFor(k chunkKey, r *record.Record) int {
	shard := k.shard
	k.shard = 0
	h := b.hotFor(k)
	if i := h.idx[shard]; i > 0 {
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
	h.idx[shard] = int32(i + 1)
	return i
}

// hotFor returns the hot chunks of k (shard 0), taking the place of the
// older of the two when k is neither.
func (b *Buckets) hotFor(k chunkKey) *hotChunks {
	for j := range b.hot {
		if b.hot[j].valid && b.hot[j].key == k {
			return &b.hot[j]
		}
	}
	h := &b.hot[b.hotNext]
	b.hotNext ^= 1
	h.key, h.valid = k, true
	size := 1 << k.bits
	if cap(h.idx) < size {
		h.idx = make([]int32, size)
	}
	h.idx = h.idx[:size]
	clear(h.idx)
	return h
}

func (b *Buckets) mark(id record.ID, i, n int) {
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

// Reset empties b, keeping its buffers and what it learnt of the
// instance's seconds.
func (b *Buckets) Reset() {
	b.clearChunks()
	for _, v := range b.v1 {
		b.keep(v)
	}
	clear(b.v1)
	b.records = 0
}

// clearChunks empties the chunks, counters and marks.
func (b *Buckets) clearChunks() {
	for _, c := range b.chunks {
		b.keep(c.buf)
	}
	clear(b.index)
	clear(b.markIdx)
	b.chunks, b.marks, b.counts = b.chunks[:0], b.marks[:0], b.counts[:0]
	b.dropHot()
	b.hotSec, b.lastMrk = -1, -1
}

func (b *Buckets) dropHot() {
	for j := range b.hot {
		b.hot[j].valid = false
	}
}

func (b *Buckets) keep(v []byte) {
	if cap(v) > 0 && len(b.free) < 256 {
		b.free = append(b.free, v[:0])
	}
}

// learn keeps the instance's split and count of second sec, and forgets
// the seconds long past.
func (b *Buckets) learn(sec int64, v int64) {
	b.split[sec] = secSplit{bits: int(v % 16), n: v / 16}
	if len(b.split) > splitMemory {
		for s := range b.split {
			if s < sec-splitMemory/2 {
				delete(b.split, s)
			}
		}
	}
}

// rebuild makes the chunks and counts of the write again from the records
// in its chunks, after learning how the instance splits some of its
// seconds; the marks stay as they are.
func (b *Buckets) rebuild() error {
	old := b.chunks
	b.chunks = nil
	clear(b.index)
	b.counts = b.counts[:0]
	b.dropHot()
	b.hotSec = -1
	for _, c := range old {
		if err := DecodeChunk(c.buf, c.key.sec, nil, func(r *record.Record) { b.add(c.key.sec, r) }); err != nil {
			return fmt.Errorf("rebuild a write: %w", err)
		}
		b.keep(c.buf)
	}
	return nil
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
// the chunks' lists, per second its counter and those of the splitHistory
// seconds before, the marks. ARGV: the three counts, the marks' lifetime in
// ms, shardTarget, MaxShardBits, splitHistory, chunkFloor, the writer's
// write size, then (deadline, chunk) per list, (deadline, records, split)
// per second, and a bitmap per mark.
//
// It answers {1, index of a mark, its value, …} and writes nothing if a
// mark already has a bit of its bitmap; {2, index of a second, its
// counter, …} and writes nothing if a second is split otherwise than the
// write says. A second that has no counter yet is split as ShardBits says
// of the busiest of the splitHistory seconds before it and the write size. Else it writes and answers {0, the seconds'
// counters…}. A key gets its expiry when the write creates it.
var writeScript = redis.NewScript(`
local nc, nn, nm, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local target, maxbits, hist = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local floor, w = tonumber(ARGV[8]), tonumber(ARGV[9])
local ka, ac = nc + (1 + hist) * nn, 10 + 2 * nc
local am = ac + 3 * nn
local out = {1}
for m = 1, nm do
  local cur = redis.call('GET', KEYS[ka + m])
  if cur then
    local new = ARGV[am + m - 1]
    for i = 1, math.min(#cur, #new) do
      if bit.band(string.byte(cur, i), string.byte(new, i)) ~= 0 then
        out[#out + 1] = m - 1
        out[#out + 1] = cur
        break
      end
    end
  end
end
if #out > 1 then return out end
out[1] = 2
local cur, split = {}, {}
for j = 1, nn do
  local kc = nc + (1 + hist) * (j - 1) + 1
  local v = redis.call('GET', KEYS[kc])
  if v then
    cur[j] = tonumber(v)
    split[j] = cur[j] % 16
  else
    local n = 0
    for d = 1, hist do
      local p = redis.call('GET', KEYS[kc + d])
      if p then n = math.max(n, math.floor(tonumber(p) / 16)) end
    end
    local k = 0
    while k < maxbits and n > target * 2 ^ k and (w == 0 or w >= floor * 2 ^ (k + 1)) do k = k + 1 end
    split[j] = k
  end
  if split[j] ~= tonumber(ARGV[ac + 3 * j - 1]) then
    out[#out + 1] = j - 1
    out[#out + 1] = cur[j] or split[j]
  end
end
if #out > 1 then return out end
local a = 10
for i = 1, nc do
  if redis.call('RPUSH', KEYS[i], ARGV[a + 1]) == 1 then
    redis.call('PEXPIREAT', KEYS[i], ARGV[a])
  end
  a = a + 2
end
out = {0}
for j = 1, nn do
  local kc, d = KEYS[nc + (1 + hist) * (j - 1) + 1], 16 * tonumber(ARGV[a + 1])
  if not cur[j] then d = d + split[j] end
  out[j + 1] = redis.call('INCRBY', kc, d)
  if not cur[j] then redis.call('PEXPIREAT', kc, ARGV[a]) end
  a = a + 3
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
return out`)

// appendScript appends ARGV[1] to KEYS[1] and sets its absolute expiry in
// ms (layout v1).
var appendScript = redis.NewScript(`
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1`)

// maxResplits bounds how often one write is made again because it guessed
// the split of a second wrong: each time, b learns the split of every
// second the write named, so a second try only meets a second that another
// consumer started in the meantime.
const maxResplits = 3

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
	if b.V1 {
		return nil, withScript(ctx, rdb, appendScript, func() error { return l.writeV1(ctx, rdb, b) })
	}
	for try := 0; ; try++ {
		var held []Held
		var resplit bool
		err := withScript(ctx, rdb, writeScript, func() (err error) {
			held, resplit, err = l.writeV2(ctx, rdb, b)
			return err
		})
		if err != nil || !resplit {
			return held, err
		}
		if try == maxResplits {
			return nil, fmt.Errorf("write: the instance split a second otherwise %d times in a row", try+1)
		}
		if err := b.rebuild(); err != nil {
			return nil, err
		}
	}
}

// withScript runs run and, if Redis does not have the script (a restarted
// or new Redis has no script cache), loads it and runs run again.
func withScript(ctx context.Context, rdb redis.UniversalClient, script *redis.Script, run func() error) error {
	err := run()
	if isNoScript(err) {
		if lerr := script.Load(ctx, rdb).Err(); lerr != nil {
			return fmt.Errorf("load write script: %w", lerr)
		}
		err = run()
	}
	return err
}

// writeV2 runs writeScript for b. It returns what the instance held, or
// resplit when a second of the write is split otherwise on the instance
// (b has learnt how, and must be rebuilt).
func (l Layout) writeV2(ctx context.Context, rdb redis.UniversalClient, b *Buckets) (held []Held, resplit bool, err error) {
	nc, nn, nm := len(b.chunks), len(b.counts), len(b.marks)
	keys := make([]string, 0, nc+(1+splitHistory)*nn+nm)
	args := make([]any, 9, 9+2*nc+3*nn+nm)
	args[0], args[1], args[2], args[3] = nc, nn, nm, l.Retention.Milliseconds()
	args[4], args[5], args[6], args[7], args[8] = shardTarget, MaxShardBits, splitHistory, chunkFloor, b.lastWrite
	for i := range b.chunks {
		c := &b.chunks[i]
		keys = append(keys, l.ChunkKey(c.key.sec, c.key.shard, c.key.bits))
		args = append(args, l.DeadlineMS(c.key.sec), c.buf)
	}
	for _, c := range b.counts {
		for d := range int64(1 + splitHistory) {
			keys = append(keys, l.CountKey(c.sec-d))
		}
		args = append(args, l.DeadlineMS(c.sec), c.n, c.bits)
	}
	for _, m := range b.marks {
		keys = append(keys, l.MarkKey(m.id))
		args = append(args, m.bits)
	}
	v, err := writeScript.EvalSha(ctx, rdb, keys, args...).Result()
	if err != nil {
		return nil, false, err
	}
	list, _ := v.([]any)
	if len(list) == 0 {
		return nil, false, fmt.Errorf("write script answered %v", v)
	}
	switch kind, _ := list[0].(int64); kind {
	case 0:
		for j := 1; j < len(list) && j <= nn; j++ {
			n, _ := list[j].(int64)
			b.learn(b.counts[j-1].sec, n)
		}
		b.lastWrite = int64(b.records)
		return nil, false, nil
	case 1:
		held, err := heldOf(list[1:], b.marks)
		return held, false, err
	case 2:
		for j := 1; j+1 < len(list); j += 2 {
			c, _ := list[j].(int64)
			n, _ := list[j+1].(int64)
			if c < 0 || int(c) >= nn {
				return nil, false, fmt.Errorf("write script named counter %d of %d", c, nn)
			}
			b.learn(b.counts[c].sec, n)
		}
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("write script answered kind %d", kind)
	}
}

func heldOf(list []any, marks []mark) ([]Held, error) {
	held := make([]Held, 0, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		m, _ := list[i].(int64)
		bits, _ := list[i+1].(string)
		if m < 0 || int(m) >= len(marks) {
			return nil, fmt.Errorf("write script named mark %d of %d", m, len(marks))
		}
		held = append(held, Held{ID: marks[m].id, Bits: []byte(bits)})
	}
	return held, nil
}

func (l Layout) writeV1(ctx context.Context, rdb redis.UniversalClient, b *Buckets) error {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sec, data := range b.v1 {
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
