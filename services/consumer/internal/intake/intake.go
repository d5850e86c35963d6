// Package intake consumes the records queue: it receives messages with
// manual acks and a prefetch, decodes them, gathers what has arrived into
// rounds, hands each round to the store and acks the round's messages only
// once every record of them is stored. Undecodable messages go to the
// dead-letter exchange with the reason in a header.
//
// # Rounds
//
// One goroutine receives and decodes; when a message arrives it also takes
// whatever else is already waiting (up to RoundMessages messages or
// RoundRecords records, without waiting for more) and passes the round to a
// second goroutine that stores and acks. Decoding the next round overlaps
// storing the last. Rounds are stored and acked in delivery order, so one
// ack with multiple=true on a round's last tag acks the whole round.
//
// # Reconnects
//
// Intake runs under a broker.Session: when the connection drops, the
// session dials again and intake consumes again; the broker redelivers
// every message that was not acked. A delivery tag belongs to its channel:
// a round received on a dead channel is never acked on a new one. Its store is abandoned when the session ends, and
// whatever of it was stored already is stored again on redelivery (at least
// once).
//
// # Shutdown
//
// When ctx ends, intake cancels its consumer, stores and acks the messages
// already in hand (for at most DrainTimeout), and closes the connection.
package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Storer stores decoded messages. Store returns nil only once every record
// is stored; an error means some may not be, and the messages stay unacked.
type Storer interface {
	Store(ctx context.Context, msgs []*record.Batch) error
}

// Config configures an Intake.
type Config struct {
	URL        string
	ConsumerID string
	Prefetch   int    // unacked messages the broker may send ahead
	Store      Storer // where records go

	// Gate, when not nil, holds consuming back until it is closed (the
	// control log has been read).
	Gate <-chan struct{}

	// Retention is the records' retention window; a record stamped more
	// than this before its ingest time is counted as out of window (past).
	Retention time.Duration

	// MaxMessageBytes is the largest body decoded; a larger one is
	// dead-lettered too_large without being read. DefaultMaxMessageBytes if 0.
	MaxMessageBytes int

	RoundMessages int           // most messages per round; Prefetch/2 (at least 1) if 0
	RoundRecords  int           // most records per round, unless one message holds more; 20000 if 0
	DrainTimeout  time.Duration // how long shutdown may spend storing what is in hand; 10s if 0

	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time // receive time; time.Now if nil
}

// DefaultMaxMessageBytes bounds a records message body when the
// configuration does not. Capture's batches (BATCH_SIZE 512 records of at
// most 297 bytes) stay far below it.
const DefaultMaxMessageBytes = 1 << 20

// Metrics are intake's Prometheus collectors.
type Metrics struct {
	Acked        prometheus.Counter
	DeadLettered *prometheus.CounterVec // by reason
	Connected    prometheus.Gauge
	Reconnects   prometheus.Counter
	Received     prometheus.Counter // records decoded
	// OutOfWindow counts records whose own timestamp lies outside their
	// retention window: side future (stamped after they were received;
	// stored by ingest time) or past (stamped more than RETENTION before
	// ingest, as a replayed capture is).
	OutOfWindow *prometheus.CounterVec
}

// NewMetrics creates intake's metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_consumer_messages_acked_total", Help: "Records messages acked (stored, or dead-lettered).",
		}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_messages_dead_lettered_total", Help: "Records messages sent to conn.records.dead because they could not be decoded, by reason (too_large: over MAX_MESSAGE_BYTES, not read).",
		}, []string{"reason"}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connpipe_consumer_amqp_connected", Help: "1 while connected to RabbitMQ.",
		}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_consumer_amqp_reconnects_total", Help: "RabbitMQ sessions that ended and were dialled again.",
		}),
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_consumer_records_received_total", Help: "Records decoded from messages (redeliveries count again).",
		}),
		OutOfWindow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_records_out_of_window_total",
			Help: "Records stamped outside their retention window, stored by ingest time: side future (after they were received) or past (more than RETENTION before ingest).",
		}, []string{"side"}),
	}
	if reg != nil {
		reg.MustRegister(m.Acked, m.DeadLettered, m.Connected, m.Reconnects, m.Received, m.OutOfWindow)
	}
	return m
}

// Intake consumes the records queue.
type Intake struct {
	cfg     Config
	log     *slog.Logger
	m       *Metrics
	sess    broker.Session
	acked   atomic.Uint64
	dead    atomic.Uint64
	held    atomic.Int64 // messages received and not yet settled
	batches sync.Pool    // *record.Batch
}

// New returns an Intake; call Run.
func New(cfg Config) *Intake {
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 64
	}
	if cfg.RoundMessages <= 0 {
		cfg.RoundMessages = max(1, cfg.Prefetch/2)
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.RoundRecords <= 0 {
		cfg.RoundRecords = 20000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	in := &Intake{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
	in.sess = broker.Session{URL: cfg.URL, Name: "consumer " + cfg.ConsumerID, Log: cfg.Logger}
	in.batches.New = func() any { return new(record.Batch) }
	return in
}

// Connected reports whether intake has a live broker session.
func (in *Intake) Connected() bool { return in.sess.Status().State == broker.StateUp }

// Broker is the state of intake's broker session.
func (in *Intake) Broker() broker.Status { return in.sess.Status() }

// Acked is the number of messages acked since start.
func (in *Intake) Acked() uint64 { return in.acked.Load() }

// DeadLettered is the number of messages dead-lettered since start.
func (in *Intake) DeadLettered() uint64 { return in.dead.Load() }

// Held is the number of messages received and not yet stored and acked.
func (in *Intake) Held() int { return int(in.held.Load()) }

// Run consumes until ctx ends, reconnecting as needed. It returns nil after
// a graceful shutdown.
func (in *Intake) Run(ctx context.Context) error {
	rounds := make(chan *round, 1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for r := range rounds {
			in.process(r)
		}
	}()
	defer func() {
		close(rounds)
		<-writerDone
	}()
	n := 0
	return in.sess.Run(ctx, func(ctx context.Context, conn *broker.Conn) error {
		n++
		err := in.session(ctx, conn, n, rounds)
		if err != nil && ctx.Err() == nil {
			in.m.Reconnects.Inc()
		}
		return err
	})
}

// session is one connection's worth of consuming.
type session struct {
	ch  *amqp.Channel // consumer channel: its tags, its acks
	pub *amqp.Channel // confirm-mode channel for dead letters
	// ctx ends when the session is lost (its rounds can no longer be
	// acked) or when shutdown gives up on storing.
	ctx         context.Context
	cancelStore context.CancelFunc
	inflight    sync.WaitGroup
	// unsafeMultiple is set once a round of this session was left unacked;
	// later rounds then ack message by message, so a multiple ack cannot
	// cover it.
	unsafeMultiple atomic.Bool
}

func (in *Intake) session(ctx context.Context, conn *broker.Conn, n int, rounds chan<- *round) error {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	s := &session{ctx: sctx, cancelStore: cancel}
	var err error
	if s.ch, err = conn.Channel(); err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := s.ch.Qos(in.cfg.Prefetch, 0, false); err != nil {
		return fmt.Errorf("qos %d: %w", in.cfg.Prefetch, err)
	}
	if s.pub, err = conn.Channel(); err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := s.pub.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	conn.Ready()
	in.m.Connected.Set(1)
	defer in.m.Connected.Set(0)

	if in.cfg.Gate != nil {
		select {
		case <-in.cfg.Gate:
		case <-ctx.Done():
			return nil
		case <-conn.Closed():
			return conn.Err()
		}
	}
	tag := fmt.Sprintf("%s-%d", in.cfg.ConsumerID, n)
	deliveries, err := s.ch.Consume(topology.RecordsQueue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %q: %w", topology.RecordsQueue, err)
	}
	in.log.Info("consuming", "queue", topology.RecordsQueue, "consumer_tag", tag, "prefetch", in.cfg.Prefetch)

	for {
		var r *round
		select {
		case <-ctx.Done():
			return in.shutdown(s, tag, deliveries, nil, rounds)
		case <-conn.Closed():
			return conn.Err()
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("delivery channel closed (channel closed or consumer cancelled by the broker)")
			}
			r = in.gather(s, d, deliveries)
		}
		s.inflight.Add(1)
		in.held.Add(int64(len(r.items)))
		select {
		case rounds <- r:
		case <-ctx.Done():
			return in.shutdown(s, tag, deliveries, r, rounds)
		case <-conn.Closed():
			s.inflight.Done()
			in.held.Add(-int64(len(r.items)))
			return conn.Err()
		}
	}
}

// gather starts a round with d and adds whatever else is already waiting.
func (in *Intake) gather(s *session, d amqp.Delivery, deliveries <-chan amqp.Delivery) *round {
	r := &round{s: s}
	in.add(r, d)
	for len(r.items) < in.cfg.RoundMessages && r.records < in.cfg.RoundRecords {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return r
			}
			in.add(r, d)
		default:
			return r
		}
	}
	return r
}

// shutdown cancels the consumer, hands what is in hand to the writer and
// waits for it to be stored and acked, for at most DrainTimeout.
func (in *Intake) shutdown(s *session, tag string, deliveries <-chan amqp.Delivery, held *round, rounds chan<- *round) error {
	in.log.Info("stopping: cancelling the consumer and storing what is in hand")
	giveUp := time.AfterFunc(in.cfg.DrainTimeout, func() {
		in.log.Warn("shutdown: gave up storing what was in hand; the broker redelivers it", "after", in.cfg.DrainTimeout)
		// Ending the session context makes the writer abandon its rounds.
		s.cancelStore()
	})
	defer giveUp.Stop()
	if err := s.ch.Cancel(tag, false); err != nil {
		in.log.Warn("cancel consumer", "consumer_tag", tag, "err", err)
	}
	// send hands over r, already counted in s.inflight.
	send := func(r *round) {
		select {
		case rounds <- r:
		case <-s.ctx.Done():
			s.inflight.Done()
		}
	}
	if held != nil {
		send(held)
	}
	// After Cancel the delivery channel yields what the broker had sent
	// and then closes.
drain:
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				break drain
			}
			if s.ctx.Err() != nil {
				continue // unacked: redelivered after we close
			}
			s.inflight.Add(1)
			send(in.gather(s, d, deliveries))
		case <-s.ctx.Done():
			break drain // gave up; closing the channel returns the rest
		}
	}
	s.inflight.Wait()
	_ = s.ch.Close()
	_ = s.pub.Close()
	return nil
}
