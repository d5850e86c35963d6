// Package store is connpipe's Redis layout, the one place that names keys
// and walks entries: the consumer writes by it, and admin's read-back and
// tally read by it.
//
// # Layout v2
//
// Records are kept in time buckets, one per second, each split by a hash
// of the source address into a number of lists that grows with the rate:
//
//	<prefix>r2:<unix-second>:<shard>/<shards>   a list of chunks (chunk.go)
//	<prefix>c:<unix-second>                     16 × the records the instance stored in that second + log2(shards)
//	<prefix>d:<producer>:<seq>                  which records of batch (producer, seq) the instance holds
//
// A question about one source reads one list per second per instance. A
// second is split into 1 to 1024 lists (a power of two), so that a list
// holds about shardTarget/2 to shardTarget records: the first write of a
// second decides it from the records the instance stored in the three
// seconds before (ShardBits of the busiest) and the size of the writer's
// writes, and the second's counter keeps it, so every consumer
// writes that second alike. A source question therefore reads about the
// same few hundred records a second per instance whatever the rate, and
// chunks stay big enough to cost little memory. A chunk writes what its
// records share once (the destination, a base time) and each entry in 9 to
// 13 bytes for IPv4. The counters answer "how many" for a window without
// reading a record.
//
// A consumer writes a round's records to an instance with one Lua call
// (writeScript): it checks the batch marks and the seconds' shard counts
// first, and when some record of the write is already marked on the
// instance it writes nothing and returns the marks, so the consumer drops
// those records and writes the rest; when the write guessed the split of a
// second wrong, it writes nothing and returns the split, and the write is
// made again by it. Otherwise it pushes the chunks, adds to the counters
// and marks the records, every key with its expiry, atomically. Since a
// batch's records are routed by their place in the producer's stream
// (package routing), a second delivery of a batch sends each record to the
// instance that holds it: exactly once in effect, checked in the same
// round trip as the write.
//
// Readers also read what the previous release wrote: 32 lists a second
// named <prefix>r2:<unix-second>:<shard> and counted in <prefix>n:<unix-second>.
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
	"encoding/binary"
	"math/bits"
	"net/netip"
	"strconv"
	"time"

	"github.com/connpipe/connpipe/shared/record"
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

// MaxShardBits bounds the lists of a second: at most 1 << MaxShardBits.
const MaxShardBits = 10

// shardTarget is the most records a list of a second should hold, judged
// from the seconds before. Fewer records a list make a source question
// read less but cost memory: a round's records are split into more,
// smaller chunks, each with its header, and more lists, each with its own
// overhead. Measured with 3,000,000 records over 5 minutes
// (TestMemoryPerRecord): 156 records a list cost 17.1 bytes an IPv4
// record, 312 cost 13.9–14.6.
const shardTarget = 512

// legacyShardBits is the fixed split of the previous release's lists.
const legacyShardBits = 5

// chunkFloor is the fewest records a chunk should hold on average: a
// chunk's header and its list entry cost about 16 bytes, a record 9 to 13.
const chunkFloor = 16

// ShardBits is log2 of the lists a second is split into when the seconds
// before it held n records on the instance and the writer's writes hold w
// records (0: unknown): the fewest lists that keep n/lists at or under
// shardTarget, up to 1 << MaxShardBits, but no more than keep w/lists at
// chunkFloor or over, so that the busier seconds do not cut small writes
// into chunks of a record or two.
func ShardBits(n, w int64) int {
	k := 0
	for k < MaxShardBits && n > shardTarget<<k && (w == 0 || w >= chunkFloor<<(k+1)) {
		k++
	}
	return k
}

// AddrHash is the hash of source address a that picks its list: its top
// bits are the shard. It is part of the layout: changing it moves every
// source to another list.
func AddrHash(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	h := (hi ^ bits.RotateLeft64(lo, 29)) * 0x9e3779b97f4a7c15
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	return h
}

// Shard is the list, of 1 << k, that holds source address a.
func Shard(a netip.Addr, k int) int { return shardOf(AddrHash(a), k) }

func shardOf(h uint64, k int) int {
	if k == 0 {
		return 0
	}
	return int(h >> (64 - k))
}

// ChunkKey is the key of list shard of the 1 << k lists of second sec.
func (l Layout) ChunkKey(sec int64, shard, k int) string {
	return l.Prefix + "r2:" + strconv.FormatInt(sec, 10) + ":" + strconv.Itoa(shard) + "/" + strconv.Itoa(1<<k)
}

// legacyChunkKey is the key of list shard of the 32 lists of second sec
// that the previous release wrote.
func (l Layout) legacyChunkKey(sec int64, shard int) string {
	return l.Prefix + "r2:" + strconv.FormatInt(sec, 10) + ":" + strconv.Itoa(shard)
}

// legacyCountKey is the previous release's counter of second sec.
func (l Layout) legacyCountKey(sec int64) string {
	return l.Prefix + "n:" + strconv.FormatInt(sec, 10)
}

// CountKey is the key of the counter of second sec: 16 × the records the
// instance stored in it + log2 of the lists it is split into.
func (l Layout) CountKey(sec int64) string {
	return l.Prefix + "c:" + strconv.FormatInt(sec, 10)
}

// MarkKey is the key of the mark of batch id: a bitmap whose bit i (bit 7
// of byte 0 is record 0) is set when the instance holds the batch's record i.
func (l Layout) MarkKey(id record.ID) string {
	const digits = "0000000000000000"
	x := strconv.FormatUint(id.Producer, 16)
	return l.Prefix + "d:" + digits[len(x):] + x + ":" + strconv.FormatUint(id.Seq, 10)
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
