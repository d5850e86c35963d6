// Package textout prints records as text lines, capture's OUTPUT=stdout:
// the documented text form, buffered and flushed promptly.
package textout

import (
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// Writer prints each record on its own line in the documented text form
// (record.Record.String: tab-separated ts_ns src_ip dst_ip src_port dst_port
// tcp_flags ip_len [key]). Lines are formatted straight into one buffer
// that is written out when it fills, and within FlushDelay of a write (or
// on Flush, for a Part), so a live capture shows up promptly.
type Writer struct {
	mu    sync.Mutex
	dst   *dest
	buf   []byte
	line  lineFormat
	timer *time.Timer // nil for a Part: its caller flushes
	armed bool
	err   error     // the first failed write seen by this writer
	parts []*Writer // made by Part, flushed by Close
}

// dest is the io.Writer that a Writer and its parts share, and the lock
// that keeps their writes whole.
type dest struct {
	mu sync.Mutex
	w  io.Writer
}

func (d *dest) write(p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := d.w.Write(p)
	return err
}

// FlushDelay bounds how long a printed record waits in the buffer.
const FlushDelay = 100 * time.Millisecond

// bufSize is how much text is written out at once.
const bufSize = 64 << 10

// New prints to w.
func New(w io.Writer) *Writer {
	t := newWriter(&dest{w: w})
	t.timer = time.AfterFunc(time.Hour, func() { _ = t.Flush() })
	t.timer.Stop()
	return t
}

func newWriter(d *dest) *Writer {
	return &Writer{dst: d, buf: make([]byte, 0, bufSize+256)}
}

// Part returns a writer for one of several goroutines that print at the
// same time (live ring readers), so that each formats its lines on its
// own core: only writing a full buffer out takes a lock shared with t.
// Lines of one part stay in order; parts' buffers interleave whole.
//
// A part has no flush timer: its caller calls Flush whenever it has
// nothing more to add for now, as a ring reader does when its ring is
// drained (arming a timer woke another thread of the process once for each
// block under light traffic). t's Close flushes its parts.
func (t *Writer) Part() *Writer {
	p := newWriter(t.dst)
	t.mu.Lock()
	t.parts = append(t.parts, p)
	t.mu.Unlock()
	return p
}

// Add prints r.
func (t *Writer) Add(_ context.Context, r *record.Record) error {
	t.mu.Lock()
	t.add(r)
	err := t.err
	t.mu.Unlock()
	return err
}

// AddAll prints recs in order, taking the lock once.
func (t *Writer) AddAll(_ context.Context, recs []record.Record) error {
	t.mu.Lock()
	for i := range recs {
		t.add(&recs[i])
	}
	err := t.err
	t.mu.Unlock()
	return err
}

// add is Add with mu held.
func (t *Writer) add(r *record.Record) {
	if t.err != nil {
		return
	}
	t.buf = t.line.append(t.buf, r)
	t.buf = append(t.buf, '\n')
	if len(t.buf) >= bufSize {
		t.writeOut()
	} else if !t.armed && t.timer != nil {
		t.armed = true
		t.timer.Reset(FlushDelay)
	}
}

// writeOut writes the buffer; a failed write sticks. Call with mu held.
func (t *Writer) writeOut() {
	if len(t.buf) == 0 || t.err != nil {
		return
	}
	t.err = t.dst.write(t.buf)
	t.buf = t.buf[:0]
}

// Flush writes out buffered lines. A source that knows when it has
// nothing more for now (a drained ring) calls it then, so the flush timer
// does not have to wake up.
func (t *Writer) Flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.armed {
		t.armed = false
		t.timer.Stop()
	}
	t.writeOut()
	return t.err
}

// Close flushes t, then its parts, and stops the flush timer. Call it
// once nothing adds to t or its parts any more.
func (t *Writer) Close(context.Context) error {
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Lock()
	parts := t.parts
	t.mu.Unlock()
	err := t.Flush()
	for _, p := range parts {
		if perr := p.Flush(); err == nil {
			err = perr
		}
	}
	return err
}

// lineFormat formats records. Records of a live capture come in time
// order and mostly between the same addresses, so it keeps the text of
// the last whole second and of the last IPv6 source and destination
// address, and writes a line in place with fixed-size copies.
type lineFormat struct {
	sec      int64
	secText  [16]byte // the decimal seconds, at most 10 digits
	secLen   int
	src, dst addrText
}

// addrText is an address and its text.
type addrText struct {
	addr netip.Addr
	text [48]byte
	n    int
	ok   bool
}

// set makes a hold addr's text, unless addr is IPv4 (which put writes
// directly); false for an address with a zone, whose text has no bound.
func (a *addrText) set(addr netip.Addr) bool {
	if addr.Is4() || a.ok && addr == a.addr {
		return true
	}
	if addr.Zone() != "" {
		return false
	}
	a.addr, a.n, a.ok = addr, len(appendAddr(a.text[:0], addr)), true
	return true
}

// put writes addr's text at b[i:], which has room for 48 bytes: an
// IPv4 address directly, another from a (set with addr).
func (a *addrText) put(b []byte, i int, addr netip.Addr) int {
	if addr.Is4() {
		for _, x := range addr.As4() {
			o := octets[x]
			binary.LittleEndian.PutUint32(b[i:], uint32(o))
			i += int(o >> 32)
		}
		return i - 1 // the last octet's dot
	}
	if a.n <= 16 {
		*(*[16]byte)(b[i:]) = *(*[16]byte)(a.text[:])
	} else {
		*(*[48]byte)(b[i:]) = a.text
	}
	return i + a.n
}

// lineRoom is the most a line without its key takes, with room for the
// last fixed-size copy to run past its end.
const lineRoom = 16 + 9 + 1 + 48 + 1 + 48 + 1 + 5 + 1 + 5 + 1 + 6 + 1 + 5 + 1

func (f *lineFormat) append(dst []byte, r *record.Record) []byte {
	if r.TS < 1e9 || r.IPLen > 0xffff || !f.src.set(r.Src) || !f.dst.set(r.Dst) {
		return appendSlow(dst, r)
	}
	if sec := r.TS / 1e9; sec != f.sec || f.secLen == 0 {
		f.sec = sec
		f.secLen = len(strconv.AppendInt(f.secText[:0], sec, 10))
	}
	n := len(dst)
	if cap(dst)-n < lineRoom {
		dst = slices.Grow(dst, lineRoom)
	}
	b := dst[n:cap(dst)]
	*(*[16]byte)(b) = f.secText
	i := f.secLen
	ns := uint32(r.TS % 1e9)
	b[i] = byte('0' + ns/1e8)
	ns %= 1e8
	for k := i + 7; k > i; k -= 2 {
		p := ns % 100 * 2
		ns /= 100
		b[k], b[k+1] = pairs[p], pairs[p+1]
	}
	b[i+9] = '\t'
	i = f.src.put(b, i+10, r.Src)
	b[i] = '\t'
	i = f.dst.put(b, i+1, r.Dst)
	b[i] = '\t'
	i = putUint16(b, i+1, r.SrcPort)
	b[i] = '\t'
	i = putUint16(b, i+1, r.DstPort)
	const hex = "0123456789abcdef"
	b[i], b[i+1], b[i+2], b[i+3] = '\t', '0', 'x', hex[r.Flags>>12&0xf]
	b[i+4], b[i+5], b[i+6], b[i+7] = hex[r.Flags>>8&0xf], hex[r.Flags>>4&0xf], hex[r.Flags&0xf], '\t'
	i = putUint16(b, i+8, uint16(r.IPLen))
	dst = dst[:n+i]
	if r.Key != "" {
		dst = append(dst, '\t')
		dst = append(dst, r.Key...)
	}
	return dst
}

// appendSlow formats any record: times before 1970-01-01T00:00:01Z, IP
// lengths over 65,535 and
// addresses with a zone.
func appendSlow(dst []byte, r *record.Record) []byte {
	const hex = "0123456789abcdef"
	dst = strconv.AppendInt(dst, r.TS, 10)
	dst = append(dst, '\t')
	dst = appendAddr(dst, r.Src)
	dst = append(dst, '\t')
	dst = appendAddr(dst, r.Dst)
	dst = append(dst, '\t')
	dst = strconv.AppendUint(dst, uint64(r.SrcPort), 10)
	dst = append(dst, '\t')
	dst = strconv.AppendUint(dst, uint64(r.DstPort), 10)
	dst = append(dst, '\t', '0', 'x', hex[r.Flags>>12&0xf], hex[r.Flags>>8&0xf], hex[r.Flags>>4&0xf], hex[r.Flags&0xf], '\t')
	dst = strconv.AppendUint(dst, uint64(r.IPLen), 10)
	if r.Key != "" {
		dst = append(dst, '\t')
		dst = append(dst, r.Key...)
	}
	return dst
}

// pairs holds "00" to "99", two bytes each.
const pairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// putUint16 writes v in decimal at b[i:], which has room for 5 bytes.
func putUint16(b []byte, i int, v uint16) int {
	x := uint32(v)
	switch {
	case x < 10:
		b[i] = byte('0' + x)
		return i + 1
	case x < 100:
		b[i], b[i+1] = pairs[x*2], pairs[x*2+1]
		return i + 2
	case x < 1000:
		p := x % 100 * 2
		b[i], b[i+1], b[i+2] = byte('0'+x/100), pairs[p], pairs[p+1]
		return i + 3
	case x < 10000:
		p, q := x/100*2, x%100*2
		b[i], b[i+1], b[i+2], b[i+3] = pairs[p], pairs[p+1], pairs[q], pairs[q+1]
		return i + 4
	}
	p, q := x/100%100*2, x%100*2
	b[i], b[i+1], b[i+2], b[i+3], b[i+4] = byte('0'+x/10000), pairs[p], pairs[p+1], pairs[q], pairs[q+1]
	return i + 5
}

// octets holds the decimal text of each byte value and a dot, packed
// little-endian in the low 32 bits, with its length above them.
var octets = func() (o [256]uint64) {
	for i := range o {
		t := strconv.Itoa(i) + "."
		var w [4]byte
		copy(w[:], t)
		o[i] = uint64(binary.LittleEndian.Uint32(w[:])) | uint64(len(t))<<32
	}
	return o
}()

func appendAddr(dst []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(dst, "invalid IP"...) // as netip.Addr.String
	}
	return a.AppendTo(dst)
}
