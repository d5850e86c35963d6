// Package textout prints records as text lines, capture's OUTPUT=stdout:
// the documented text form, buffered and flushed promptly.
package textout

import (
	"bufio"
	"context"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// Writer prints each record on its own line in the documented text form
// (record.Record.String: tab-separated ts_ns src_ip dst_ip src_port dst_port
// tcp_flags ip_len [key]). Output is buffered and flushed within
// FlushDelay of a write, so a live capture shows up promptly.
type Writer struct {
	mu    sync.Mutex
	w     *bufio.Writer
	line  []byte
	timer *time.Timer
	armed bool
	err   error
}

// FlushDelay bounds how long a printed record waits in the buffer.
const FlushDelay = 100 * time.Millisecond

// New prints to w.
func New(w io.Writer) *Writer {
	t := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	t.timer = time.AfterFunc(time.Hour, func() { _ = t.Flush() })
	t.timer.Stop()
	return t
}

// Add prints r.
func (t *Writer) Add(_ context.Context, r *record.Record) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return t.err
	}
	t.line = Append(t.line[:0], r)
	t.line = append(t.line, '\n')
	if _, err := t.w.Write(t.line); err != nil {
		t.err = err
		return err
	}
	if !t.armed {
		t.armed = true
		t.timer.Reset(FlushDelay)
	}
	return nil
}

// Flush writes out buffered lines.
func (t *Writer) Flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed = false
	if t.err != nil {
		return t.err
	}
	if err := t.w.Flush(); err != nil {
		t.err = err
	}
	return t.err
}

// Close flushes and stops the flush timer.
func (t *Writer) Close(context.Context) error {
	t.timer.Stop()
	return t.Flush()
}

// Append appends the text form of r (exactly r.String()) to dst,
// without allocating.
func Append(dst []byte, r *record.Record) []byte {
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

func appendAddr(dst []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(dst, "invalid IP"...) // as netip.Addr.String
	}
	return a.AppendTo(dst)
}
