// Package publish ships records to RabbitMQ: the Batcher groups them into
// binary batches by count and by time, the Publisher sends batches with
// publisher confirms and a bounded window (republishing whatever is nacked
// or unconfirmed when a connection drops), and the Shipper puts the spool
// between them. Text output (OUTPUT=stdout) is package textout.
package publish

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/spool"
	"github.com/connpipe/connpipe/shared/record"
)

// Batch is one encoded records message.
type Batch struct {
	Body    []byte // a record.ContentTypeBinary body
	Records int
	Ingest  int64 // Unix ns when the batch was started

	tag         uint64 // delivery tag while unconfirmed
	republished bool
	spooled     bool        // read from the spool: acked there once confirmed
	entry       spool.Entry // its place in the spool when spooled
}

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("batcher closed")

// Batcher groups records into batches of at most size records, sending a
// batch on Out when it is full or interval after its first record. Add
// blocks while Out is not being drained, which is how a slow broker slows
// the reader down.
type Batcher struct {
	size     int
	interval time.Duration
	out      chan Batch
	now      func() time.Time
	timerCtx context.Context // bounds sends started by the timer

	mu      sync.Mutex // held while a batch is sent, so batches leave in order
	enc     record.Encoder
	started time.Time // when the open batch got its first record
	held    []Batch   // finished batches whose send was interrupted, in order
	timer   *time.Timer
	closed  bool
	// id names the open batch: this process's producer identity, drawn at
	// random when the batcher is made, and a sequence number counted from
	// 1. A batch keeps its name through republishes and the spool, so the
	// consumers store it once (record.ID).
	id record.ID
	// made counts the records of the batches before the open one.
	made uint64
}

// newProducerID draws a producer identity: random, so that a restarted
// capture never reuses the names of batches still in its spool.
func newProducerID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // never fails since Go 1.24
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// NewBatcher returns a batcher whose Out has capacity 1. ctx bounds the
// sends that the interval timer makes.
func NewBatcher(ctx context.Context, size int, interval time.Duration) *Batcher {
	b := &Batcher{size: max(size, 1), interval: interval, out: make(chan Batch, 1), now: time.Now, timerCtx: ctx,
		id: record.ID{Producer: newProducerID()}}
	if interval > 0 {
		b.timer = time.AfterFunc(time.Hour, b.expire)
		b.timer.Stop()
	}
	return b
}

// Out is where finished batches go; Close closes it.
func (b *Batcher) Out() <-chan Batch { return b.out }

// Add appends r to the open batch, sending the batch when it is full.
func (b *Batcher) Add(ctx context.Context, r *record.Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.add(ctx, r)
}

// AddAll appends recs in order, as Add does each, taking the lock once.
func (b *Batcher) AddAll(ctx context.Context, recs []record.Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range recs {
		if err := b.add(ctx, &recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// add is Add with b.mu held.
func (b *Batcher) add(ctx context.Context, r *record.Record) error {
	if b.closed {
		return ErrClosed
	}
	if b.enc.Len() == 0 {
		b.started = b.now()
		b.id.Seq++
		b.enc.ResetID(b.started.UnixNano(), b.id, b.made)
		if b.timer != nil {
			b.timer.Reset(b.interval)
		}
	}
	b.enc.Add(r)
	if b.enc.Len() >= b.size {
		return b.send(ctx)
	}
	return nil
}

// expire sends the open batch once it is interval old.
func (b *Batcher) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.enc.Len() == 0 {
		return
	}
	if age := b.now().Sub(b.started); age < b.interval {
		b.timer.Reset(b.interval - age) // a timer armed for an earlier batch
		return
	}
	_ = b.send(b.timerCtx)
}

// send finishes the open batch and hands it, after any held ones, to Out;
// b.mu is held. A send interrupted by ctx keeps the batch for the next
// send, Flush or Close: a record that Add accepted is not dropped.
func (b *Batcher) send(ctx context.Context) error {
	if b.enc.Len() > 0 {
		bt := Batch{Body: append([]byte(nil), b.enc.Bytes()...), Records: b.enc.Len(), Ingest: b.started.UnixNano()}
		b.made += uint64(bt.Records)
		b.enc.Reset(0) // Len()==0: no open batch
		if b.timer != nil {
			b.timer.Stop()
		}
		b.held = append(b.held, bt)
	}
	for len(b.held) > 0 {
		select {
		case b.out <- b.held[0]:
			b.held = b.held[1:]
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.held = nil
	return nil
}

// Held is the number of records accepted by Add that have not been handed
// to Out (the open batch and any batch whose send was interrupted).
func (b *Batcher) Held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.enc.Len()
	for _, h := range b.held {
		n += h.Records
	}
	return n
}

// Flush sends the open batch now, if any.
func (b *Batcher) Flush(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	return b.send(ctx)
}

// Close flushes the open batch and closes Out. If ctx ends first, the
// batcher stays open and Close may be called again.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	err := b.send(ctx)
	if err != nil {
		return err // still open: Close can be called again
	}
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	close(b.out)
	return nil
}
