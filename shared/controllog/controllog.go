// Package controllog reads and writes the control log, the RabbitMQ stream
// conn.control, and keeps the routing table it folds to.
//
// A Reader consumes the stream from its first message and folds every
// message with control.Apply, so every reader that starts from the same
// initial table reaches the same table, the same version and the same
// verdicts, in the same order. To know when it has read the whole log as it
// stood at start — a stream has no end to reach — the reader publishes a
// sync marker with a fresh id and becomes Ready when it reads its own marker
// back: everything published before the marker has then been folded.
//
// After a lost connection the reader dials again and refolds from the
// start; the table in force is kept meanwhile and only positions past the
// last one applied are applied and announced again, so each subscriber sees
// every verdict exactly once, in log order.
package controllog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNotConnected is returned by Publish while the reader has no broker
// connection.
var ErrNotConnected = errors.New("control log: not connected to rabbitmq")

// Config configures a Reader.
type Config struct {
	URL     string         // AMQP URL
	Name    string         // connection name, shown in the management UI; also prefixes marker ids
	Initial *control.Table // table before the first message (from BACKENDS/WEIGHTS)
	Logger  *slog.Logger
}

// Reader folds the control log.
type Reader struct {
	cfg   Config
	log   *slog.Logger
	table atomic.Pointer[control.Table]
	ready chan struct{}
	once  sync.Once

	mu      sync.Mutex
	subs    map[int]chan control.Result
	nextSub int
	waiters map[string]chan verdict
	pub     *amqp.Channel // confirm-mode channel of the live session, nil between sessions
}

type verdict struct {
	res   control.Result
	table *control.Table
}

// New returns a Reader; call Run to start it.
func New(cfg Config) *Reader {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Reader{
		cfg: cfg, log: log.With("component", "controllog"),
		ready: make(chan struct{}), subs: map[int]chan control.Result{}, waiters: map[string]chan verdict{},
	}
	r.table.Store(cfg.Initial)
	return r
}

// Table is the table in force: the initial table until the log is read.
func (r *Reader) Table() *control.Table { return r.table.Load() }

// Ready is closed once the log as it stood at start has been folded.
func (r *Reader) Ready() <-chan struct{} { return r.ready }

// IsReady reports whether Ready is closed.
func (r *Reader) IsReady() bool {
	select {
	case <-r.ready:
		return true
	default:
		return false
	}
}

// Connected reports whether the reader has a live broker session.
func (r *Reader) Connected() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pub != nil
}

// Subscribe returns a channel that receives the verdict on every message
// folded from now on, in log order (including those folded while catching
// up at start; check IsReady to tell them apart). The cancel function
// unsubscribes. A slow subscriber slows the fold; it never misses a verdict.
func (r *Reader) Subscribe() (<-chan control.Result, func()) {
	ch := make(chan control.Result, 1024)
	r.mu.Lock()
	id := r.nextSub
	r.nextSub++
	r.subs[id] = ch
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs, id)
		r.mu.Unlock()
	}
}

// Run reads the log until ctx ends, reconnecting with backoff.
func (r *Reader) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		conn, err := broker.Dial(ctx, r.cfg.URL, r.cfg.Name, r.log)
		if err != nil {
			return err // only when ctx ended
		}
		start := time.Now()
		err = r.session(ctx, conn)
		conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			attempt = 0
		}
		d := broker.DefaultBackoff.Delay(attempt)
		r.log.Warn("control log session ended, reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

func (r *Reader) session(ctx context.Context, conn *amqp.Connection) error {
	sub, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	// A stream consumer needs a prefetch and manual acks.
	if err := sub.Qos(256, 0, false); err != nil {
		return fmt.Errorf("qos on %q: %w", topology.ControlStream, err)
	}
	deliveries, err := sub.Consume(topology.ControlStream, "", false, false, false, false,
		amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		return fmt.Errorf("consume %q: %w", topology.ControlStream, err)
	}
	pub, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := pub.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	r.mu.Lock()
	r.pub = pub
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.pub = nil
		r.mu.Unlock()
	}()

	marker := r.cfg.Name + "-" + randomID()
	if err := r.publish(ctx, control.Message{Op: control.OpSync, ID: marker, By: r.cfg.Name}); err != nil {
		return fmt.Errorf("publish sync marker: %w", err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))

	// Fold privately from the start; apply to the world only positions past
	// the last one applied, so a refold after a reconnect announces nothing twice.
	t := r.cfg.Initial
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-closed:
			return fmt.Errorf("connection closed: %v", e)
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("control stream delivery channel closed")
			}
			pos, ok := offset(d.Headers)
			if !ok {
				_ = d.Ack(false)
				return fmt.Errorf("delivery from %q without x-stream-offset header", topology.ControlStream)
			}
			var res control.Result
			t, res = control.Apply(t, pos, d.Body)
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("ack control message at %d: %w", pos, err)
			}
			if cur := r.table.Load(); cur == nil || pos > cur.Position {
				r.table.Store(t)
				r.announce(res, t)
			}
			if res.Message.Op == control.OpSync && res.Message.ID == marker {
				r.once.Do(func() {
					r.log.Info("control log read", "version", t.Version, "position", pos, "weights", t.String())
					close(r.ready)
				})
			}
		}
	}
}

func (r *Reader) announce(res control.Result, t *control.Table) {
	// Subscribers (the consumer, admin's API) log verdicts for operators,
	// with the context they have; the reader only traces them.
	if res.Err != nil {
		r.log.Debug("control message refused", "position", res.Position, "id", res.Message.ID, "err", res.Err)
	} else if res.Changed {
		r.log.Debug("control change applied", "position", res.Position, "version", t.Version, "id", res.Message.ID, "by", res.Message.By, "table", t.Describe())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs {
		ch <- res
	}
	if res.Message.ID != "" {
		if w, ok := r.waiters[res.Message.ID]; ok {
			w <- verdict{res, t}
			delete(r.waiters, res.Message.ID)
		}
	}
}

func offset(h amqp.Table) (int64, bool) {
	switch v := h["x-stream-offset"].(type) {
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int:
		return int64(v), true
	}
	return 0, false
}

// publish sends m to the log and waits for the broker's confirm.
func (r *Reader) publish(ctx context.Context, m control.Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	r.mu.Lock()
	pub := r.pub
	r.mu.Unlock()
	if pub == nil {
		return ErrNotConnected
	}
	dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, "", topology.ControlStream, true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		MessageId: m.ID, Timestamp: time.Now(), AppId: r.cfg.Name,
	})
	if err != nil {
		return fmt.Errorf("publish to %q: %w", topology.ControlStream, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("confirm from %q: %w", topology.ControlStream, err)
	}
	if !ok {
		return fmt.Errorf("broker refused (nack) the message to %q", topology.ControlStream)
	}
	return nil
}

// Publish appends a change to the log (confirmed by the broker) and waits
// for the fold's verdict on it. m.ID is set to a fresh id when empty. The
// returned table is the one in force right after the message was folded.
// A refusal is reported in Result.Err, not as the error; the error is for
// failures to publish or to see the verdict before ctx ends.
func (r *Reader) Publish(ctx context.Context, m control.Message) (control.Result, *control.Table, error) {
	select {
	case <-r.ready:
	case <-ctx.Done():
		return control.Result{}, nil, fmt.Errorf("control log not read yet: %w", ctx.Err())
	}
	if m.ID == "" {
		m.ID = randomID()
	}
	w := make(chan verdict, 1)
	r.mu.Lock()
	r.waiters[m.ID] = w
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, m.ID)
		r.mu.Unlock()
	}()
	if err := r.publish(ctx, m); err != nil {
		return control.Result{}, nil, err
	}
	select {
	case v := <-w:
		return v.res, v.table, nil
	case <-ctx.Done():
		return control.Result{}, nil, fmt.Errorf("published %s but saw no verdict: %w", m.ID, ctx.Err())
	}
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
