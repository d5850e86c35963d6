// Package spool keeps encoded record batches on local disk while the
// broker cannot take them: a bounded FIFO of append-only segment files
// that survives a restart or a kill.
//
// A segment file is named seg-NNNNNNNNNNNNNNNNNNNN.spool (its sequence
// number, so names sort in order) and holds an 8-byte magic "CPSPOOL1"
// followed by entries:
//
//	u32 body length | u32 records | i64 ingest (Unix ns) | u32 CRC32C | body
//
// all little-endian; the CRC (Castagnoli) covers the first 16 header bytes
// and the body. Each entry is written with one write call, so a process
// that is killed leaves at most its last entry torn; a machine that loses
// power keeps what the fsync policy made durable.
//
// Open checks every entry of every segment. A torn or damaged entry is
// counted, logged, and the file is cut there (nothing after it in that
// segment can be trusted: its length field may be garbage); the other
// entries are read as usual. New entries always go to a new segment.
//
// Next reads entries oldest first; Ack says the broker confirmed one. A
// segment file is removed once every entry in it has been acked (and, for
// the one being written, once the reader has caught up), so an empty spool
// holds no files. Entries read and not yet acked when the process stops are
// read again at the next Open: delivery is at least once.
//
// The spool is bounded by MaxBytes (segment files on disk). A full spool
// drops by its policy: DropNewest refuses the batch being added,
// DropOldest deletes the oldest segment's unread entries to make room.
// Every dropped record is counted in Metrics.Dropped and logged at Error,
// at most once per DropLogEvery with the count since the last line.
package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FsyncPolicy says when appended entries are forced to disk.
type FsyncPolicy string

// Fsync policies. A killed process loses nothing that was appended under
// any policy (the data is in the page cache); these only matter when the
// machine itself goes down.
const (
	FsyncNever    FsyncPolicy = "never"    // leave it to the kernel's writeback
	FsyncBatch    FsyncPolicy = "batch"    // fsync after every entry
	FsyncInterval FsyncPolicy = "interval" // fsync at most once per FsyncInterval
)

// FullPolicy says what a full spool drops.
type FullPolicy string

// Full policies.
const (
	DropNewest FullPolicy = "drop-newest"
	DropOldest FullPolicy = "drop-oldest"
)

// Drop reasons, the values of Metrics.Dropped's reason label.
const (
	ReasonFull       = "full"        // the spool was at MaxBytes
	ReasonWriteError = "write_error" // the disk refused the write
	ReasonCorrupt    = "corrupt"     // an entry failed its checksum when read back
)

const (
	fileMagic    = "CPSPOOL1"
	entryHeader  = 20
	segPrefix    = "seg-"
	segSuffix    = ".spool"
	lockName     = "lock"
	maxEntryBody = 64 << 20
	// DropLogEvery bounds how often drops are logged.
	DropLogEvery = 10 * time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors.
var (
	// ErrLocked: another process holds the spool directory.
	ErrLocked = errors.New("spool directory is in use by another process")
	// ErrClosed: the spool was closed.
	ErrClosed = errors.New("spool closed")
)

// Options configures a Spool.
type Options struct {
	Dir           string
	MaxBytes      int64       // bound on the segment files' total size
	SegmentBytes  int64       // a segment is sealed past this size; 0: MaxBytes/8 capped to 16 MiB
	Fsync         FsyncPolicy // "" means FsyncInterval
	FsyncInterval time.Duration
	Full          FullPolicy // "" means DropNewest
	Logger        *slog.Logger
	Metrics       *Metrics
	Now           func() time.Time
}

// Entry is one batch in the spool.
type Entry struct {
	Body    []byte
	Records int
	Ingest  int64 // Unix ns
	ID      ID    // where it sits; set by Next
}

// ID names an entry: its segment and offset.
type ID struct {
	Seg uint64
	Off int64
}

type segment struct {
	seq         uint64
	path        string
	size        int64 // bytes on disk, file header included
	entries     int
	records     int
	read        int // entries handed out by Next
	readRecords int
	acked       int
	ackedRecs   int
	sealed      bool
	firstIngest int64
}

func (g *segment) unread() int { return g.records - g.readRecords }

// Spool is safe for concurrent use.
type Spool struct {
	opt  Options
	log  *slog.Logger
	m    *Metrics
	lock *os.File

	mu       sync.Mutex
	closed   bool
	segs     []*segment // oldest first
	nextSeq  uint64
	w        *os.File // the write segment (segs[len-1], not sealed), or nil
	dirty    bool     // written since the last fsync
	lastSync time.Time
	r        *os.File // the reader's open segment
	rseg     *segment
	roff     int64
	inflight []flight // read, not acked, in read order
	bytes    int64
	batches  int
	records  int
	hdr      [entryHeader]byte

	dropLogged time.Time
	dropQuiet  int
}

type flight struct {
	id     ID
	ingest int64
}

// Open opens (creating it if needed) the spool in opt.Dir, checks what is
// there and takes an exclusive lock on the directory.
func Open(opt Options) (*Spool, error) {
	if opt.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if opt.MaxBytes <= 0 {
		return nil, fmt.Errorf("spool: MaxBytes %d must be positive", opt.MaxBytes)
	}
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = min(opt.MaxBytes/8, 16<<20)
	}
	opt.SegmentBytes = max(opt.SegmentBytes, 256)
	switch opt.Fsync {
	case "":
		opt.Fsync = FsyncInterval
	case FsyncNever, FsyncBatch, FsyncInterval:
	default:
		return nil, fmt.Errorf("spool: fsync policy %q: want never, batch or interval", opt.Fsync)
	}
	if opt.FsyncInterval <= 0 {
		opt.FsyncInterval = time.Second
	}
	switch opt.Full {
	case "":
		opt.Full = DropNewest
	case DropNewest, DropOldest:
	default:
		return nil, fmt.Errorf("spool: full policy %q: want drop-newest or drop-oldest", opt.Full)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Metrics == nil {
		opt.Metrics = NewMetrics(nil)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(opt.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(opt.Dir, lockName), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s: %w", opt.Dir, ErrLocked)
		}
		return nil, fmt.Errorf("spool %s: lock: %w", opt.Dir, err)
	}
	s := &Spool{opt: opt, log: opt.Logger, m: opt.Metrics, lock: lock, nextSeq: 1}
	s.m.MaxBytes.Set(float64(opt.MaxBytes))
	if err := s.load(); err != nil {
		s.release()
		return nil, err
	}
	s.gauges()
	if s.records > 0 {
		s.log.Info("spool holds batches from an earlier run; they are sent first",
			"dir", opt.Dir, "batches", s.batches, "records", s.records, "bytes", s.bytes)
	}
	return s, nil
}

// load scans the segment files, checks every entry and cuts damaged tails.
func (s *Spool) load() error {
	names, err := os.ReadDir(s.opt.Dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var seqs []uint64
	for _, d := range names {
		n := d.Name()
		if !strings.HasPrefix(n, segPrefix) || !strings.HasSuffix(n, segSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segPrefix), segSuffix), 10, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, seq := range seqs {
		g, err := s.scan(seq)
		if err != nil {
			return err
		}
		s.nextSeq = seq + 1
		if g == nil {
			continue
		}
		s.segs = append(s.segs, g)
		s.bytes += g.size
		s.batches += g.entries
		s.records += g.records
	}
	return nil
}

// scan checks one segment file. It returns nil for a file with no entry
// left (removed).
func (s *Spool) scan(seq uint64) (*segment, error) {
	g := &segment{seq: seq, path: s.segPath(seq), sealed: true}
	f, err := os.OpenFile(g.path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var magic [len(fileMagic)]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil || string(magic[:]) != fileMagic {
		s.m.Corrupt.Inc()
		s.log.Error("spool segment has no valid header; removed", "file", g.path)
		f.Close()
		return nil, removeFile(g.path)
	}
	off := int64(len(fileMagic))
	var hdr [entryHeader]byte
	body := make([]byte, 0, 64<<10)
	for {
		n, err := io.ReadFull(br, hdr[:])
		if err == io.EOF {
			break
		}
		why := ""
		var blen int
		if err != nil {
			why = fmt.Sprintf("torn entry header (%d of %d bytes)", n, entryHeader)
		} else if blen = int(binary.LittleEndian.Uint32(hdr[0:])); blen > maxEntryBody {
			why = fmt.Sprintf("entry length %d out of range", blen)
		} else {
			body = slices.Grow(body[:0], blen)[:blen]
			if n, err := io.ReadFull(br, body); err != nil {
				why = fmt.Sprintf("torn entry (%d of %d body bytes)", n, blen)
			} else if crc(hdr[:16], body) != binary.LittleEndian.Uint32(hdr[16:]) {
				why = "checksum mismatch"
			}
		}
		if why != "" {
			st, _ := f.Stat()
			lost := int64(0)
			if st != nil {
				lost = st.Size() - off
			}
			s.m.Corrupt.Inc()
			s.log.Error("spool: damaged entry skipped; the segment is cut there (a write cut short by a crash)",
				"file", g.path, "offset", off, "reason", why, "bytes_skipped", lost)
			if err := f.Truncate(off); err != nil {
				return nil, fmt.Errorf("spool: cut %s: %w", g.path, err)
			}
			break
		}
		recs := int(binary.LittleEndian.Uint32(hdr[4:]))
		if g.entries == 0 {
			g.firstIngest = int64(binary.LittleEndian.Uint64(hdr[8:]))
		}
		g.entries++
		g.records += recs
		off += int64(entryHeader + blen)
	}
	g.size = off
	if g.entries == 0 {
		f.Close()
		return nil, removeFile(g.path)
	}
	return g, nil
}

func crc(hdr, body []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr)
	return crc32.Update(c, castagnoli, body)
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func (s *Spool) segPath(seq uint64) string {
	return filepath.Join(s.opt.Dir, fmt.Sprintf("%s%020d%s", segPrefix, seq, segSuffix))
}

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.opt.Dir }

// Stats is the spool's state.
type Stats struct {
	Bytes   int64 // segment files on disk
	Batches int   // entries not yet acked
	Records int   // records in them
	Oldest  int64 // ingest (Unix ns) of the oldest entry not yet acked, 0 if none
}

// Stats returns the current state.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Bytes: s.bytes, Batches: s.batches, Records: s.records, Oldest: s.oldestLocked()}
}

func (s *Spool) oldestLocked() int64 {
	if s.batches == 0 {
		return 0
	}
	var o int64
	for _, f := range s.inflight {
		if o == 0 || f.ingest < o {
			o = f.ingest
		}
	}
	if o != 0 {
		return o
	}
	for _, g := range s.segs {
		if g.read < g.entries {
			return g.firstIngest // the segment's first entry: an upper bound on the age of its unread ones
		}
	}
	return 0
}

func (s *Spool) gauges() {
	s.m.Bytes.Set(float64(s.bytes))
	s.m.Batches.Set(float64(s.batches))
	s.m.Records.Set(float64(s.records))
	s.m.oldest.Store(s.oldestLocked())
}

// Close syncs and closes the files and releases the directory. Entries not
// acked stay on disk for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.w != nil {
		g := s.segs[len(s.segs)-1]
		s.syncLocked()
		s.w.Close()
		s.w = nil
		g.sealed = true
		s.maybeRemoveLocked(g)
	}
	s.closeReaderLocked()
	s.closed = true
	s.gauges()
	s.release()
	return nil
}

func (s *Spool) release() {
	if s.lock != nil {
		_ = syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
		s.lock.Close()
		s.lock = nil
	}
}

// Metrics returns the spool's metrics.
func (s *Spool) Metrics() *Metrics { return s.m }
