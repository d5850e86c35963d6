// Package keyscan gives every record of a TCP connection the routing key
// found in the connection's client-to-server bytes.
//
// A Scanner holds the records of each connection, in order, while it reads
// the connection's payload: segments are put back in sequence order (a
// value split across segments, or arriving out of order, is still found)
// and the first ScanBytes of the stream are matched against a regular
// expression with one capture group. A connection's records are released,
// with the key or without one, when the first of these happens:
//
//   - found:    the rule matched; the capture group is the key
//   - window:   ScanBytes were read without a match
//   - no_match: the stream ended (FIN in sequence order, or RST) without one
//   - timeout:  Wait passed since the connection's first held record
//   - evicted:  the bound on connections or bytes pushed the oldest waiting
//     connection out
//   - shutdown: Close released it
//
// After that the connection's later records pass straight through with the
// same key (also the handshake's last ACK after a FIN) until it has been
// idle for Linger, or a new SYN reuses its address and ports.
//
// A match whose capture group reaches the end of the bytes read so far is
// not taken while more bytes may extend it (a greedy group like \S+ cut by
// a segment boundary); the next segment, the window, the stream's end or
// the timeout settles it (the timeout takes the match as it stands).
//
// # Cost
//
// Each scan reads only the bytes that arrived since the last one plus the
// overlap a match can span: the rule's longest match in bytes when it has
// one (a rule with *, + or an open repeat, or with ^ or \b, which look at
// the byte before, has none and rescans from the start). A scan is put off
// while the new bytes are fewer than that overlap, until enough arrive,
// the stream ends, the window fills or the next tick of Run; so every byte
// is scanned at most about three times however the stream is cut (8,191
// one-byte segments cost what one 8,191-byte segment does).
//
// # Memory
//
// The scanner reassembles the stream itself, in the connection's own
// buffers: the in-order bytes and out-of-order pieces (at most ScanBytes of
// each) of every waiting connection, its held records and a fixed cost per
// tracked connection are all counted against MaxBytes, and connections
// against MaxConns. Over either bound, settled connections are forgotten
// first (oldest first), then the oldest waiting connection is released
// (evicted), both counted. Nothing is kept outside that count but the map
// of connections itself.
//
// All records a Scanner sees are client-to-server packets (capture records
// only packets sent to the listen address), so a connection is its
// (src, dst, src port, dst port) and only that direction is reassembled.
// A Scanner is safe for concurrent use: the reading goroutine calls Packet,
// Run's ticker calls Expire; both hand records to the output under one
// lock, so a connection's records leave in order.
package keyscan

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"time"
	"unsafe"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/prometheus/client_golang/prometheus"
)

// Output receives released records.
type Output interface {
	Add(ctx context.Context, r *record.Record) error
}

// Defaults.
const (
	DefaultScanBytes = 8192
	DefaultWait      = time.Second
	DefaultMaxConns  = 65536
	DefaultMaxBytes  = 64 << 20
	// Linger is how long a settled connection's key is remembered after
	// its last packet.
	Linger = 2 * time.Minute
)

// Results of a connection's wait, the values of the result label.
const (
	ResultFound    = "found"
	ResultWindow   = "window"
	ResultTimeout  = "timeout"
	ResultNoMatch  = "no_match"
	ResultEvicted  = "evicted"
	ResultShutdown = "shutdown"
)

var results = []string{ResultFound, ResultWindow, ResultTimeout, ResultNoMatch, ResultEvicted, ResultShutdown}

// Config configures a Scanner.
type Config struct {
	Rule      *regexp.Regexp // one capture group: the key
	ScanBytes int            // bytes of each stream scanned at most
	Wait      time.Duration  // longest a connection's records are held
	MaxConns  int            // connections tracked at most (waiting or settled)
	// MaxBytes bounds the memory of tracked connections: held records,
	// stream bytes (in order and out of order) and a fixed cost each.
	MaxBytes int64
	Now      func() time.Time
	Metrics  *Metrics
}

// Metrics are the scanner's counters.
type Metrics struct {
	Connections  *prometheus.CounterVec // by result
	RecordsHeld  prometheus.Gauge
	BytesScanned prometheus.Counter // bytes passed to the rule, overlaps counted again
	Bytes        prometheus.Gauge   // memory counted against MaxBytes
	Forgotten    *prometheus.CounterVec
	byResult     map[string]prometheus.Counter
}

// NewMetrics registers the scanner's metrics with reg (none when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_key_connections_total",
			Help: "Connections whose held records were released, by result: found, window, timeout, no_match, evicted, shutdown."}, []string{"result"}),
		RecordsHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_key_records_held",
			Help: "Records held back while their connection's key is looked for."}),
		BytesScanned: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_key_bytes_scanned_total",
			Help: "Bytes matched against KEY_RULE (the overlap of successive scans counts again)."}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_key_bytes",
			Help: "Memory of tracked connections counted against KEY_MAX_BYTES: held records, reassembly buffers, per-connection state."}),
		Forgotten: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_key_forgotten_total",
			Help: "Settled connections forgotten before Linger to stay within a bound, by bound: conns (KEY_MAX_CONNS) or bytes (KEY_MAX_BYTES)."}, []string{"bound"}),
		byResult: map[string]prometheus.Counter{},
	}
	for _, r := range results {
		m.byResult[r] = m.Connections.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.RecordsHeld, m.BytesScanned, m.Bytes, m.Forgotten)
	}
	return m
}

// recordBytes is what one held record costs, for MaxBytes.
const recordBytes = int64(unsafe.Sizeof(record.Record{}))

// connBytes is the fixed cost of a tracked connection: its state and its
// entry in the map. A map slot holds the key and a pointer; a map that
// connections keep entering and leaving holds up to four slots an entry
// (load factor, growth, deleted slots). Measured: 1.5 M connections through
// 65,536 tracked ones, each with two held records and 100 stream bytes,
// leave about 880 bytes a connection live; this counts 840.
const connBytes = int64(unsafe.Sizeof(conn{})) + 4*(int64(unsafe.Sizeof(connKey{}))+8)

// pieceBytes is the fixed cost of an out-of-order piece besides its bytes.
const pieceBytes = int64(unsafe.Sizeof(piece{}))

// connKey names a connection.
type connKey struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

type state uint8

const (
	waiting state = iota
	settled
)

// piece is out-of-order stream bytes at offset off.
type piece struct {
	off  int
	data []byte
}

// conn is one connection. It sits in the waiting list (by first held
// record) or the settled list (by last packet).
type conn struct {
	k        connKey
	st       state
	result   string // set when settled
	key      string
	isn      uint32 // sequence number of the SYN, when seen
	hasISN   bool
	base     uint32 // sequence number of stream byte 0
	hasBase  bool
	finOff   int // stream offset of the FIN; -1 until one is seen
	ended    bool
	started  time.Time // first held record
	lastSeen time.Time
	held     []record.Record
	buf      []byte  // stream bytes in order from offset 0, up to ScanBytes
	ooo      []piece // out-of-order pieces, by offset
	oooLen   int     // bytes in ooo
	scanned  int     // len(buf) at the last scan
	pend     [2]int  // the last scan's match of the group, touching the end; -1 if none
	bytes    int64   // what c counts against MaxBytes
	prev     *conn
	next     *conn
}

// list is an intrusive doubly linked list of conns.
type list struct{ head, tail *conn }

func (l *list) push(c *conn) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *list) remove(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

// Scanner holds and keys records. See the package doc.
type Scanner struct {
	cfg     Config
	out     Output
	m       *Metrics
	overlap int // bytes before the last scan's end that a scan reads again

	mu       sync.Mutex
	conns    map[connKey]*conn
	waiting  list // by first held record, oldest first
	settled  list // by last packet, oldest first
	nWaiting int
	bytes    int64 // counted against MaxBytes
	closed   bool
}

// New returns a Scanner releasing records to out.
func New(cfg Config, out Output) *Scanner {
	if cfg.ScanBytes <= 0 {
		cfg.ScanBytes = DefaultScanBytes
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	s := &Scanner{cfg: cfg, out: out, m: cfg.Metrics, conns: map[connKey]*conn{}}
	s.overlap = cfg.ScanBytes
	if w, ok := MatchSpan(cfg.Rule); ok && w < cfg.ScanBytes {
		s.overlap = w
	}
	return s
}

// Packet takes one record and its TCP segment (header and captured
// payload, as decode.DecodeSegment gives it) and hands the connection's
// records to the output as soon as its key is settled. r is not retained.
func (s *Scanner) Packet(ctx context.Context, r *record.Record, seg []byte) error {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("key scanner closed")
	}
	k := connKey{r.Src, r.Dst, r.SrcPort, r.DstPort}
	c := s.conns[k]
	syn := r.Flags&(record.FlagSYN|record.FlagACK) == record.FlagSYN
	var seq uint32
	if len(seg) >= 8 {
		seq = binary.BigEndian.Uint32(seg[4:8])
	}
	if c != nil && c.st == settled {
		if !syn || (c.hasISN && c.isn == seq) {
			c.lastSeen = now
			s.settled.remove(c)
			s.settled.push(c)
			r.Key = c.key
			return s.out.Add(ctx, r)
		}
		s.forget(c) // a new connection on the same address and ports
		c = nil
	}
	if c == nil {
		var err error
		if c, err = s.track(ctx, k, now); err != nil {
			return err
		}
	}
	if syn && !c.hasISN {
		c.isn, c.hasISN = seq, true
	}
	c.lastSeen = now
	rec := *r
	rec.Key = ""
	c.held = append(c.held, rec)
	s.m.RecordsHeld.Inc()

	s.feed(c, seg)
	s.account(c)
	if c.result != "" {
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	return s.bound(ctx)
}

// bound forgets settled connections, then evicts waiting ones, oldest
// first, until the memory counted is within MaxBytes.
func (s *Scanner) bound(ctx context.Context) error {
	for s.bytes > s.cfg.MaxBytes {
		if c := s.settled.head; c != nil {
			s.m.Forgotten.WithLabelValues("bytes").Inc()
			s.forget(c)
			continue
		}
		c := s.waiting.head
		if c == nil {
			return nil
		}
		c.result = ResultEvicted
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// track starts waiting on a new connection, making room first.
func (s *Scanner) track(ctx context.Context, k connKey, now time.Time) (*conn, error) {
	for len(s.conns) >= s.cfg.MaxConns {
		if s.settled.head != nil {
			s.m.Forgotten.WithLabelValues("conns").Inc()
			s.forget(s.settled.head)
			continue
		}
		old := s.waiting.head
		old.result = ResultEvicted
		if err := s.release(ctx, old); err != nil {
			return nil, err
		}
		s.forget(old)
	}
	c := &conn{k: k, started: now, finOff: -1, pend: [2]int{-1, -1}}
	s.conns[k] = c
	s.waiting.push(c)
	s.nWaiting++
	s.account(c)
	return c, nil
}

// forget drops a settled connection.
func (s *Scanner) forget(c *conn) {
	s.settled.remove(c)
	if s.conns[c.k] == c {
		delete(s.conns, c.k)
	}
	s.bytes -= c.bytes
	c.bytes = 0
	s.m.Bytes.Set(float64(s.bytes))
}

// account brings c's share of the memory count up to date.
func (s *Scanner) account(c *conn) {
	n := connBytes
	if c.st == waiting {
		n += int64(cap(c.held))*recordBytes + int64(cap(c.buf)) + int64(c.oooLen) + int64(cap(c.ooo))*pieceBytes
	}
	s.bytes += n - c.bytes
	c.bytes = n
	s.m.Bytes.Set(float64(s.bytes))
}

// release hands c's held records to the output with its key and settles c.
func (s *Scanner) release(ctx context.Context, c *conn) error {
	if c.st != waiting {
		return nil
	}
	s.waiting.remove(c)
	s.nWaiting--
	c.st = settled
	s.settled.push(c)
	if c.result != ResultFound {
		c.key = ""
	}
	s.m.byResult[c.result].Inc()
	s.m.RecordsHeld.Sub(float64(len(c.held)))
	held := c.held
	c.held, c.buf, c.ooo, c.oooLen = nil, nil, nil, 0
	s.account(c)
	// Every record goes to the output even after an error: the batcher
	// keeps what Add accepted when a send is interrupted.
	var first error
	for i := range held {
		held[i].Key = c.key
		if err := s.out.Add(ctx, &held[i]); err != nil && first == nil {
			first = fmt.Errorf("release held records: %w", err)
		}
	}
	return first
}

// Expire scans what was put off, releases the connections that have waited
// Wait and forgets settled ones idle for Linger.
func (s *Scanner) Expire(ctx context.Context) error {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := s.waiting.head; c != nil; {
		next := c.next // release moves c to the settled list
		if c.scanned < len(c.buf) {
			if s.scan(c, true, false); c.result != "" {
				if err := s.release(ctx, c); err != nil {
					return err
				}
			}
		}
		c = next
	}
	for c := s.waiting.head; c != nil && now.Sub(c.started) >= s.cfg.Wait; c = s.waiting.head {
		if s.scan(c, true, true); c.result != ResultFound {
			c.result = ResultTimeout
		}
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	for c := s.settled.head; c != nil && now.Sub(c.lastSeen) >= Linger; c = s.settled.head {
		s.forget(c)
	}
	return nil
}

// Run calls Expire every tick until ctx ends. Released records go to the
// output under outCtx.
func (s *Scanner) Run(ctx, outCtx context.Context) error {
	t := time.NewTicker(min(max(s.cfg.Wait/8, 5*time.Millisecond), 250*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Expire(outCtx); err != nil {
				return err
			}
		}
	}
}

// Close releases every held record without a key (result shutdown), oldest
// connection first; later Packets fail.
func (s *Scanner) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := s.waiting.head; c != nil; c = s.waiting.head {
		c.result = ResultShutdown
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// Stats is a snapshot for tests and logs.
type Stats struct {
	Conns, Waiting, Held int
	HeldBytes            int64 // held records and stream bytes of waiting connections
	Bytes                int64 // all that counts against MaxBytes
}

// Stats reports what the scanner holds.
func (s *Scanner) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Conns: len(s.conns), Waiting: s.nWaiting, Bytes: s.bytes}
	for c := s.waiting.head; c != nil; c = c.next {
		st.Held += len(c.held)
		st.HeldBytes += c.bytes - connBytes
	}
	return st
}
