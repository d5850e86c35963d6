package publish

import (
	"bufio"
	"context"
	"io"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// Text prints each record on its own line in the documented text form
// (record.Record.String: tab-separated ts_ns src_ip dst_ip src_port dst_port
// tcp_flags ip_len [key]). Output is buffered and flushed within
// FlushDelay of a write, so a live capture shows up promptly.
type Text struct {
	mu    sync.Mutex
	w     *bufio.Writer
	timer *time.Timer
	armed bool
	err   error
}

// FlushDelay bounds how long a printed record waits in the buffer.
const FlushDelay = 100 * time.Millisecond

// NewText prints to w.
func NewText(w io.Writer) *Text {
	t := &Text{w: bufio.NewWriterSize(w, 64<<10)}
	t.timer = time.AfterFunc(time.Hour, func() { _ = t.Flush() })
	t.timer.Stop()
	return t
}

// Add prints r.
func (t *Text) Add(_ context.Context, r *record.Record) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return t.err
	}
	if _, err := t.w.WriteString(r.String()); err != nil {
		t.err = err
		return err
	}
	if err := t.w.WriteByte('\n'); err != nil {
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
func (t *Text) Flush() error {
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
func (t *Text) Close(context.Context) error {
	t.timer.Stop()
	return t.Flush()
}
