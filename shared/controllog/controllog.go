// Package controllog reads and writes the control log, the RabbitMQ stream
// conn.control, and keeps the routing table it folds to.
//
// A Reader folds every message of the log with control.Apply, so every
// reader that starts from the same table reaches the same table, the same
// version and the same verdicts, in the same order.
//
// It does not start from the first message when it need not: a writer
// (admin) appends a snapshot of its folded table to the stream
// conn.control.snapshots every SnapshotEvery messages, and a reader takes
// the latest snapshot and folds only what came after it. Readers never
// write: a reader knows it has read the log as it stood at start by
// attaching a second consumer at the stream's last chunk, whose highest
// offset is the tail to reach; an empty stream answers nothing, and
// ProbeWait bounds how long that is waited for. So the log grows by the
// changes alone, and a consumer needs no permission to write to it.
//
// The reader runs under a broker.Session: after a lost connection it dials
// again and refolds from the latest snapshot; the table in force is kept
// meanwhile and only positions past the last one applied are applied and
// announced again, so each subscriber sees every verdict exactly once, in
// log order.
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
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNotConnected is returned by Publish while the reader has no broker
// connection.
var ErrNotConnected = errors.New("control log: not connected to rabbitmq")

// Config configures a Reader.
type Config struct {
	URL     string         // AMQP URL
	Name    string         // connection name, shown in the management UI
	Initial *control.Table // table before the log's seed or first change (from BACKENDS/WEIGHTS)
	Logger  *slog.Logger

	// ProbeWait is how long an empty stream is waited on at start before
	// the reader takes it as empty (DefaultProbeWait when 0).
	ProbeWait time.Duration
	// SnapshotEvery makes this reader a snapshot writer: once ready, it
	// appends its table to conn.control.snapshots whenever that many
	// messages have been folded since the latest snapshot. 0 writes none.
	SnapshotEvery int64
	// Seed makes this reader seed a log that has no starting table with
	// Initial, once read (control.Seed): admin does, consumers do not.
	Seed bool
}

// DefaultProbeWait bounds the wait for an empty stream's first message.
const DefaultProbeWait = 1500 * time.Millisecond

// probeQuiet ends a probe once the last chunk has been delivered: no
// delivery for that long. A busy broker can pause for a few hundred
// milliseconds inside a chunk; a probe that stopped there would start a
// reader from an older snapshot (correct, but it folds more).
const probeQuiet = 500 * time.Millisecond

// DefaultSnapshotEvery is admin's snapshot interval, in messages.
const DefaultSnapshotEvery = 100

// Reader folds the control log.
type Reader struct {
	cfg   Config
	log   *slog.Logger
	sess  broker.Session
	table atomic.Pointer[control.Table]
	ready chan struct{}
	once  sync.Once

	mu      sync.Mutex
	subs    map[int]chan control.Result
	nextSub int
	waiters map[string]chan verdict
	pub     *amqp.Channel // confirm-mode channel of the live session, nil between sessions

	history []Entry // the last HistoryLimit messages folded, oldest first; under mu

	lastSnap  atomic.Int64 // position of the latest snapshot known, -1 for none
	stats     Stats
	warnedEnv bool
}

// Stats counts what a reader did, for metrics and tests.
type Stats struct {
	Folded      atomic.Int64 // messages folded, catch-up included
	CatchUp     atomic.Int64 // messages folded before the reader was ready, over every session
	Snapshots   atomic.Int64 // snapshots written
	FromSnap    atomic.Int64 // sessions that started from a snapshot
	Gaps        atomic.Int64 // sessions that found messages missing after their starting point
	BadSnapshot atomic.Int64 // snapshots that could not be used
}

// Stats returns the reader's counters.
func (r *Reader) Stats() *Stats { return &r.stats }

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
	r.sess = broker.Session{URL: cfg.URL, Name: cfg.Name, Log: r.log}
	r.table.Store(cfg.Initial)
	r.lastSnap.Store(-1)
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
func (r *Reader) Connected() bool { return r.sess.Status().State == broker.StateUp }

// Broker is the state of the reader's broker session.
func (r *Reader) Broker() broker.Status { return r.sess.Status() }

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

// Run reads the log until ctx ends, under a broker.Session: after a lost
// connection it dials again and refolds.
func (r *Reader) Run(ctx context.Context) error {
	return r.sess.Run(ctx, r.session)
}

func (r *Reader) session(ctx context.Context, conn *broker.Conn) error {
	wait := r.cfg.ProbeWait
	if wait <= 0 {
		wait = DefaultProbeWait
	}
	// Where to start: after the latest snapshot, else at the first message.
	// The tail is probed meanwhile.
	tails := make(chan probe, 1)
	go func() {
		pos, _, err := lastMessage(ctx, conn.Connection, topology.ControlStream, wait)
		tails <- probe{pos, err}
	}()
	f := &fold{r: r, ctx: ctx, tail: -2}
	f.t, f.from = r.start(ctx, conn, wait)
	deliveries, err := r.open(conn, f.from)
	if err != nil {
		return err
	}
	defer r.setPub(nil)
	conn.Ready()

	f.checkReady()
	f.expect = f.t.Position + 1
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-conn.Closed():
			return conn.Err()
		case p := <-tails:
			if p.err != nil {
				return fmt.Errorf("probe the end of %q: %w", topology.ControlStream, p.err)
			}
			f.tail = p.pos
			f.checkReady()
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("control stream delivery channel closed")
			}
			if err := f.deliver(d); err != nil {
				return err
			}
		}
	}
}

// start is the table a session starts from and the stream offset of its
// first message: the latest snapshot (made the table in force when it is
// newer), else the starting table and the stream's first message.
func (r *Reader) start(ctx context.Context, conn *broker.Conn, wait time.Duration) (*control.Table, any) {
	snap := r.latestSnapshot(ctx, conn.Connection, wait)
	if snap == nil {
		return r.cfg.Initial, "first"
	}
	r.stats.FromSnap.Add(1)
	if cur := r.table.Load(); cur == nil || snap.Position > cur.Position {
		r.table.Store(snap)
		r.announce(control.Result{Position: snap.Position, Changed: true, Message: control.Message{Op: opSnapshot}}, snap)
	}
	return snap, snap.Position + 1
}

// open consumes the control stream from offset from, and opens the
// confirmed channel Publish writes on (r.pub).
func (r *Reader) open(conn *broker.Conn, from any) (<-chan amqp.Delivery, error) {
	sub, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	// A stream consumer needs a prefetch and manual acks.
	if err := sub.Qos(256, 0, false); err != nil {
		return nil, fmt.Errorf("qos on %q: %w", topology.ControlStream, err)
	}
	deliveries, err := sub.Consume(topology.ControlStream, "", false, false, false, false,
		amqp.Table{"x-stream-offset": from})
	if err != nil {
		return nil, fmt.Errorf("consume %q: %w", topology.ControlStream, err)
	}
	pub, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := pub.Confirm(false); err != nil {
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	r.setPub(pub)
	return deliveries, nil
}

func (r *Reader) setPub(pub *amqp.Channel) {
	r.mu.Lock()
	r.pub = pub
	r.mu.Unlock()
}

// fold is one session's progress through the log.
type fold struct {
	r      *Reader
	ctx    context.Context
	t      *control.Table // the table folded so far
	from   any            // where the session started: "first" or an offset
	tail   int64          // the log's last offset when the session began; -2 until known
	expect int64          // the offset of the next message
}

// checkReady marks the reader ready once the session has folded up to the
// tail, seeds an unseeded log, and writes a snapshot when one is due.
func (f *fold) checkReady() {
	r, t := f.r, f.t
	if f.tail == -2 || t.Position < f.tail {
		return
	}
	r.once.Do(func() {
		r.log.Info("control log read", "version", t.Version, "position", t.Position, "weights", t.String(),
			"from_snapshot", f.from != "first", "folded", r.stats.CatchUp.Load())
		close(r.ready)
		if r.cfg.Seed && !t.Seeded && t.Version == 0 {
			go r.seed(f.ctx)
		}
	})
	r.maybeSnapshot(f.ctx, t)
}

// deliver folds one message of the stream, acks it and publishes the
// table it leaves in force.
func (f *fold) deliver(d amqp.Delivery) error {
	r := f.r
	pos, ok := offset(d.Headers)
	if !ok {
		_ = d.Ack(false)
		return fmt.Errorf("delivery from %q without x-stream-offset header", topology.ControlStream)
	}
	if pos < f.expect {
		_ = d.Ack(false) // a chunk delivered from before the start
		return nil
	}
	if pos > f.expect {
		r.stats.Gaps.Add(1)
		r.log.Error("control log: messages are missing (deleted by retention before a snapshot covered them); this reader may fold another table than its peers",
			"from", f.expect, "to", pos-1)
	}
	f.expect = pos + 1
	var res control.Result
	f.t, res = control.Apply(f.t, pos, d.Body)
	t := f.t
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack control message at %d: %w", pos, err)
	}
	r.remember(d.Timestamp, res, t)
	r.stats.Folded.Add(1)
	if !r.IsReady() {
		r.stats.CatchUp.Add(1)
	}
	if res.Message.Op == control.OpSeed && res.Err == nil && !r.warnedEnv && !control.SameRouting(r.cfg.Initial, t) {
		r.warnedEnv = true
		r.log.Warn("BACKENDS/WEIGHTS differ from the starting table in the control log; following the log",
			"environment", r.cfg.Initial.Describe(), "log", t.Describe())
	}
	if cur := r.table.Load(); cur == nil || pos > cur.Position {
		r.table.Store(t)
		r.announce(res, t)
	}
	f.checkReady()
	return nil
}

type probe struct {
	pos int64
	err error
}

// lastMessage attaches to stream at its last chunk and returns the highest
// offset delivered, with that message's body: -1 when nothing came within
// wait (an empty stream). The chunk comes at once; probeQuiet after its
// last message the probe ends.
func lastMessage(ctx context.Context, conn *amqp.Connection, stream string, wait time.Duration) (int64, []byte, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, nil, fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Qos(256, 0, false); err != nil {
		return 0, nil, fmt.Errorf("qos on %q: %w", stream, err)
	}
	ds, err := ch.Consume(stream, "", false, false, false, false, amqp.Table{"x-stream-offset": "last"})
	if err != nil {
		return 0, nil, fmt.Errorf("consume %q: %w", stream, err)
	}
	last, body := int64(-1), []byte(nil)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case d, ok := <-ds:
			if !ok {
				return 0, nil, fmt.Errorf("probe of %q: delivery channel closed", stream)
			}
			if pos, ok := offset(d.Headers); ok && pos > last {
				last, body = pos, d.Body
			}
			_ = d.Ack(false)
			timer.Reset(probeQuiet)
		case <-timer.C:
			return last, body, nil
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
	return r.publishTo(ctx, topology.ControlExchange, m.ID, body)
}

// publishTo sends body to exchange (conn.control or its snapshots) and
// waits for the broker's confirm.
func (r *Reader) publishTo(ctx context.Context, exchange, id string, body []byte) error {
	r.mu.Lock()
	pub := r.pub
	r.mu.Unlock()
	if pub == nil {
		return ErrNotConnected
	}
	dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, exchange, "", true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		MessageId: id, Timestamp: time.Now(), AppId: r.cfg.Name,
	})
	if err != nil {
		return fmt.Errorf("publish to %q: %w", exchange, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("confirm from %q: %w", exchange, err)
	}
	if !ok {
		return fmt.Errorf("broker refused (nack) the message to %q", exchange)
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

// HistoryLimit bounds the entries a reader keeps for History.
const HistoryLimit = 10000

// Entry is one message of the log as this reader folded it: the audit
// trail of who changed what, and when.
type Entry struct {
	Position int64           `json:"position"`
	Time     time.Time       `json:"time"` // the message's timestamp (when it was published); zero if it carried none
	Message  control.Message `json:"-"`
	Version  int64           `json:"version"` // of the table once the message was folded
	Applied  bool            `json:"applied"` // it changed the routing
	Refused  string          `json:"refused,omitempty"`
}

// remember adds a folded message to the history.
func (r *Reader) remember(at time.Time, res control.Result, t *control.Table) {
	e := Entry{Position: res.Position, Time: at, Message: res.Message, Version: t.Version, Applied: res.Changed && res.Err == nil}
	if res.Err != nil {
		e.Refused = redact.Text(res.Err.Error())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.history); n > 0 && r.history[n-1].Position >= e.Position {
		return // folded again after a reconnect
	}
	if len(r.history) == HistoryLimit {
		r.history = append(r.history[:0], r.history[1:]...)
	}
	r.history = append(r.history, e)
}

// History returns the messages folded since the reader started (from the
// snapshot it started at, at most HistoryLimit), oldest first, those
// published at or after since (all when since is zero). A message without
// a timestamp is always included.
func (r *Reader) History(since time.Time) []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []Entry{}
	for _, e := range r.history {
		if since.IsZero() || e.Time.IsZero() || !e.Time.Before(since) {
			out = append(out, e)
		}
	}
	return out
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
