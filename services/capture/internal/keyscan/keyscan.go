// Package keyscan gives every record of a TCP connection the routing key
// found in the connection's client-to-server bytes.
//
// A Scanner holds the records of each connection, in order, while it reads
// the connection's payload: segments are put back in sequence order by
// gopacket's reassembly package (a value split across segments, or arriving
// out of order, is still found) and the first ScanBytes of the stream are
// matched against a regular expression with one capture group. A
// connection's records are released, with the key or without one, when
// the first of these happens:
//
//   - found:    the rule matched; the capture group is the key
//   - window:   ScanBytes were read without a match
//   - no_match: the stream ended (FIN or RST, in sequence order) without one
//   - timeout:  Wait passed since the connection's first held record
//   - evicted:  the bound on waiting connections or held bytes pushed the
//     oldest waiting connection out
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
// All records a Scanner sees are client-to-server packets (capture records
// only packets sent to the listen address), so a connection is its
// (src, dst, src port, dst port) and only that direction is reassembled.
// A Scanner is safe for concurrent use: the reading goroutine calls Packet,
// Run's ticker calls Expire; both hand records to the output under one
// lock, so a connection's records leave in order.
package keyscan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"time"
	"unsafe"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/reassembly"
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

// ErrRule reports a rule that is not a regular expression with exactly one
// capture group.
var ErrRule = errors.New("bad key rule")

// ParseRule compiles a key rule: a regular expression (Go RE2 syntax) with
// exactly one capture group.
func ParseRule(s string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRule, err)
	}
	if n := re.NumSubexp(); n != 1 {
		return nil, fmt.Errorf("%w: want exactly one capture group, found %d", ErrRule, n)
	}
	return re, nil
}

// Config configures a Scanner.
type Config struct {
	Rule      *regexp.Regexp // one capture group: the key
	ScanBytes int            // bytes of each stream scanned at most
	Wait      time.Duration  // longest a connection's records are held
	MaxConns  int            // connections tracked at most (waiting or settled)
	MaxBytes  int64          // held records and scanned bytes of waiting connections, at most
	Now       func() time.Time
	Metrics   *Metrics
}

// Metrics are the scanner's counters.
type Metrics struct {
	Connections  *prometheus.CounterVec // by result
	RecordsHeld  prometheus.Gauge
	BytesScanned prometheus.Counter
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
			Help: "Reassembled client-to-server payload bytes matched against KEY_RULE."}),
		byResult: map[string]prometheus.Counter{},
	}
	for _, r := range results {
		m.byResult[r] = m.Connections.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.RecordsHeld, m.BytesScanned)
	}
	return m
}

// recordBytes is what one held record costs, for MaxBytes.
const recordBytes = int64(unsafe.Sizeof(record.Record{}))

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

// conn is one connection. It sits in the waiting list (by first held
// record) or the settled list (by last packet).
type conn struct {
	k          connKey
	id         uint64
	st         state
	result     string // set when settled
	key        string
	isn        uint32 // sequence number of the SYN, when seen
	hasISN     bool
	started    time.Time // first held record
	lastSeen   time.Time
	held       []record.Record
	buf        []byte // stream bytes read, up to ScanBytes
	prev, next *conn
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
	cfg Config
	out Output
	m   *Metrics

	mu        sync.Mutex
	conns     map[connKey]*conn
	waiting   list // by first held record, oldest first
	settled   list // by last packet, oldest first
	nWaiting  int
	heldBytes int64
	nextID    uint64
	ready     []*conn // settled by a reassembly callback, to release
	asm       *reassembly.Assembler
	tcp       layers.TCP
	ac        captureContext
	feeding   *conn // the conn whose packet the assembler is handling
	lastTS    time.Time
	closed    bool
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
	s.asm = reassembly.NewAssembler(reassembly.NewStreamPool(factory{s}))
	// Out-of-order bytes wait in pages of 1900 bytes: a connection needs no
	// more than its window, all of them no more than MaxBytes.
	s.asm.MaxBufferedPagesPerConnection = cfg.ScanBytes/1900 + 2
	s.asm.MaxBufferedPagesTotal = int(min(cfg.MaxBytes/1900+1, 1<<30))
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
		seq = uint32(seg[4])<<24 | uint32(seg[5])<<16 | uint32(seg[6])<<8 | uint32(seg[7])
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
	s.heldBytes += recordBytes
	s.m.RecordsHeld.Inc()

	s.feed(c, r, seg)
	if c.result != "" {
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	if err := s.releaseReady(ctx); err != nil {
		return err
	}
	for s.heldBytes > s.cfg.MaxBytes && s.waiting.head != nil {
		old := s.waiting.head
		old.result = ResultEvicted
		if err := s.release(ctx, old); err != nil {
			return err
		}
	}
	return nil
}

// track starts waiting on a new connection, making room first.
func (s *Scanner) track(ctx context.Context, k connKey, now time.Time) (*conn, error) {
	for len(s.conns) >= s.cfg.MaxConns {
		if s.settled.head != nil {
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
	s.nextID++
	c := &conn{k: k, id: s.nextID, started: now}
	s.conns[k] = c
	s.waiting.push(c)
	s.nWaiting++
	return c, nil
}

// forget drops a settled connection.
func (s *Scanner) forget(c *conn) {
	s.settled.remove(c)
	if s.conns[c.k] == c {
		delete(s.conns, c.k)
	}
}

// feed hands the segment to the assembler, unless the window is full.
func (s *Scanner) feed(c *conn, r *record.Record, seg []byte) {
	if len(c.buf) >= s.cfg.ScanBytes || len(seg) < 20 {
		return
	}
	if err := s.tcp.DecodeFromBytes(seg, gopacket.NilDecodeFeedback); err != nil {
		return // options cut by the snapshot: nothing to scan in this one
	}
	ts := time.Unix(0, r.TS)
	if ts.After(s.lastTS) {
		s.lastTS = ts
	}
	s.ac.ci.Timestamp = ts
	s.feeding = c
	s.asm.AssembleWithContext(connFlow(c.id), &s.tcp, &s.ac)
	s.feeding = nil
}

// connFlow is the assembler's network flow for connection id: one per
// tracked connection, so a connection that reuses an address and ports
// starts afresh in the assembler too.
func connFlow(id uint64) gopacket.Flow {
	var b [8]byte
	for i := range b {
		b[i] = byte(id >> (56 - 8*i))
	}
	return gopacket.NewFlow(layers.EndpointMAC, b[2:8], b[:6])
}

// scan matches the bytes read so far; end says the stream has no more.
func (s *Scanner) scan(c *conn, end bool) {
	full := len(c.buf) >= s.cfg.ScanBytes
	if m := s.cfg.Rule.FindSubmatchIndex(c.buf); m != nil && m[2] >= 0 && m[3] > m[2] {
		if m[3] < len(c.buf) || full || end {
			key := c.buf[m[2]:m[3]]
			if len(key) > record.MaxKeyLen {
				key = key[:record.MaxKeyLen]
			}
			c.key, c.result = string(key), ResultFound
			return
		}
	}
	switch {
	case full:
		c.result = ResultWindow
	case end:
		c.result = ResultNoMatch
	}
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
	s.m.BytesScanned.Add(float64(len(c.buf)))
	s.heldBytes -= int64(len(c.held))*recordBytes + int64(len(c.buf))
	s.m.RecordsHeld.Sub(float64(len(c.held)))
	held := c.held
	c.held, c.buf = nil, nil
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

func (s *Scanner) releaseReady(ctx context.Context) error {
	for len(s.ready) > 0 {
		c := s.ready[0]
		s.ready = s.ready[1:]
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	s.ready = s.ready[:0]
	return nil
}

// Expire releases the connections that have waited Wait, forgets settled
// ones idle for Linger and lets the assembler drop what it keeps of
// connections no longer fed.
func (s *Scanner) Expire(ctx context.Context) error {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := s.waiting.head; c != nil && now.Sub(c.started) >= s.cfg.Wait; c = s.waiting.head {
		if s.scan(c, true); c.result != ResultFound {
			c.result = ResultTimeout
		}
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	for c := s.settled.head; c != nil && now.Sub(c.lastSeen) >= Linger; c = s.settled.head {
		s.forget(c)
	}
	if !s.lastTS.IsZero() {
		s.asm.FlushCloseOlderThan(s.lastTS.Add(-s.cfg.Wait))
	}
	return s.releaseReady(ctx)
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
	HeldBytes            int64
}

// Stats reports what the scanner holds.
func (s *Scanner) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Conns: len(s.conns), Waiting: s.nWaiting, HeldBytes: s.heldBytes}
	for c := s.waiting.head; c != nil; c = c.next {
		st.Held += len(c.held)
	}
	return st
}

// captureContext is the assembler's context: the packet's capture time.
type captureContext struct{ ci gopacket.CaptureInfo }

func (a *captureContext) GetCaptureInfo() gopacket.CaptureInfo { return a.ci }

// factory makes the assembler's stream for the connection being fed.
type factory struct{ s *Scanner }

func (f factory) New(_, _ gopacket.Flow, _ *layers.TCP, _ reassembly.AssemblerContext) reassembly.Stream {
	return &stream{s: f.s, c: f.s.feeding}
}

// stream receives a connection's bytes in sequence order.
type stream struct {
	s *Scanner
	c *conn
}

// invalidSequence is the assembler's "no byte seen yet".
const invalidSequence = reassembly.Sequence(-1)

func (st *stream) Accept(t *layers.TCP, _ gopacket.CaptureInfo, _ reassembly.TCPFlowDirection,
	nextSeq reassembly.Sequence, start *bool, _ reassembly.AssemblerContext) bool {
	if nextSeq == invalidSequence && !t.SYN {
		*start = true // capture began after the handshake: read from here
	}
	return true
}

func (st *stream) ReassembledSG(sg reassembly.ScatterGather, _ reassembly.AssemblerContext) {
	c, s := st.c, st.s
	if c == nil || c.st != waiting || c.result != "" {
		return
	}
	_, _, end, _ := sg.Info()
	avail, _ := sg.Lengths()
	if take := min(avail, s.cfg.ScanBytes-len(c.buf)); take > 0 {
		c.buf = append(c.buf, sg.Fetch(take)...)
		s.heldBytes += int64(take)
	}
	s.scan(c, end)
	if c.result != "" && c != s.feeding {
		s.ready = append(s.ready, c)
	}
}

func (st *stream) ReassemblyComplete(_ reassembly.AssemblerContext) bool {
	c, s := st.c, st.s
	if c != nil && c.st == waiting && c.result == "" {
		s.scan(c, true)
		if c.result == ResultNoMatch {
			c.result = ResultTimeout // closed by the flush, not by FIN or RST
		}
		if c != s.feeding {
			s.ready = append(s.ready, c)
		}
	}
	return true
}
