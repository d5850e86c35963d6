package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Metrics of the publisher.
type Metrics struct {
	Published   prometheus.Counter // records in messages handed to the broker (republishes included)
	Confirmed   prometheus.Counter // records in messages the broker confirmed
	Nacked      prometheus.Counter // messages the broker nacked
	Republished prometheus.Counter // messages published again after a nack or a lost connection
	InFlight    prometheus.Gauge   // messages not yet confirmed
	Blocked     prometheus.Gauge   // 1 while the broker blocks publishing (connection.blocked)
}

// NewMetrics registers the publisher's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Published: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_records_published_total",
			Help: "Records in messages published to the broker, republishes included."}),
		Confirmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_records_confirmed_total",
			Help: "Records in messages the broker confirmed."}),
		Nacked: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_batches_nacked_total",
			Help: "Messages the broker nacked (each is published again)."}),
		Republished: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_batches_republished_total",
			Help: "Messages published again after a nack or a lost connection."}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_in_flight",
			Help: "Messages published and not yet confirmed (or waiting to be published again)."}),
		Blocked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_broker_blocked",
			Help: "1 while the broker blocks publishing (connection.blocked: a memory or disk alarm), else 0."}),
	}
	reg.MustRegister(m.Published, m.Confirmed, m.Nacked, m.Republished, m.InFlight, m.Blocked)
	return m
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	URL         string
	Name        string // connection name shown by the broker
	MaxInFlight int    // unconfirmed messages at most
	Logger      *slog.Logger
	Metrics     *Metrics
}

// Publisher publishes batches to topology.RecordsExchange: persistent,
// content type record.ContentTypeBinary with the version header, under
// publisher confirms with at most MaxInFlight unconfirmed messages. Every
// batch is kept until confirmed; a nacked batch, or every unconfirmed batch
// when the connection or channel fails, is published again on the next
// channel (at-least-once: a batch may arrive twice, none is lost). It runs
// under a broker.Session, which dials again after a lost connection.
type Publisher struct {
	cfg     PublisherConfig
	sess    broker.Session
	blocked atomic.Pointer[string] // the broker's reason while blocked, else nil
	// rejecting is when the broker began to nack every publish (Unix ns;
	// 0 once one is confirmed again): the records queue is full.
	rejecting atomic.Int64
	// confirmed, when set, is called (on Run's goroutine) for every batch
	// the broker confirms.
	confirmed func(Batch)
	// spill, when set, is offered every unconfirmed batch that did not
	// come from the spool when the connection is lost; a batch it takes
	// (returns true) is forgotten by the publisher.
	spill func(Batch) bool
	// leftover holds the batches Run gave up on (ctx ended), for the
	// shipper to keep.
	leftover []Batch
}

// NewPublisher returns a publisher; Run does the work.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.MaxInFlight < 1 {
		cfg.MaxInFlight = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	p := &Publisher{cfg: cfg}
	p.sess = broker.Session{URL: cfg.URL, Name: cfg.Name, Log: cfg.Logger}
	return p
}

// Connected reports whether the publisher has a confirmed channel open.
func (p *Publisher) Connected() bool { return p.sess.Status().State == broker.StateUp }

// Broker is the state of the publisher's broker session.
func (p *Publisher) Broker() broker.Status { return p.sess.Status() }

// Blocked reports whether the broker has blocked publishing on the
// connection (connection.blocked, sent on a memory or disk alarm), and the
// broker's reason.
func (p *Publisher) Blocked() (bool, string) {
	if r := p.blocked.Load(); r != nil {
		return true, *r
	}
	return false, ""
}

// Rejecting reports whether the broker nacks what is published (the
// records queue at its length limit, whose overflow is reject-publish),
// and since when; it ends at the next confirm.
func (p *Publisher) Rejecting() (bool, time.Time) {
	if ns := p.rejecting.Load(); ns != 0 {
		return true, time.Unix(0, ns)
	}
	return false, time.Time{}
}

func (p *Publisher) setBlocked(b amqp.Blocking) {
	if b.Active {
		r := b.Reason
		p.blocked.Store(&r)
		p.cfg.Metrics.Blocked.Set(1)
		return
	}
	p.blocked.Store(nil)
	p.cfg.Metrics.Blocked.Set(0)
}

// renewAfterNacks is how long every publish on a channel may be nacked
// before the publisher drops the connection and opens another. A channel
// that RabbitMQ 3.10 opened while a quorum queue's leader was being
// re-elected (the leader's node killed) can keep sending to the lost leader
// and nack every publish for as long as it lives; a new one finds the new
// leader.
const renewAfterNacks = 5 * time.Second

// nackLogEvery bounds how often nacks are logged at Warn.
const nackLogEvery = 10 * time.Second

// After a nack, batches wait nackHoldMin before they are published again,
// doubling with each further nack in a row up to nackHoldMax.
const (
	nackHoldMin = 20 * time.Millisecond
	nackHoldMax = time.Second
)

// Run publishes the batches received on in until in is closed and every
// batch is confirmed, then returns nil. Its session dials again (with
// backoff) as often as needed. When ctx ends first it returns an error
// that says how many records were left unconfirmed.
func (p *Publisher) Run(ctx context.Context, in <-chan Batch) error {
	r := &run{p: p, in: in, holdTimer: time.NewTimer(0)}
	<-r.holdTimer.C
	defer p.setBlocked(amqp.Blocking{})
	err := p.sess.Run(ctx, r.session)
	if ctx.Err() != nil {
		return p.stopped(ctx, r.pending, r.retry, in, r.inClosed)
	}
	return err
}

// run is what one Run keeps across its sessions: the batches not yet
// confirmed and the hold after nacks.
type run struct {
	p        *Publisher
	in       <-chan Batch
	pending  []Batch // published, unconfirmed, in tag order
	retry    []Batch // to publish again, in order
	inClosed bool
	// After a nack, batches wait before going out again (the broker may be
	// rejecting publishes: a full queue), longer after each nack in a row.
	nacksInRow   int
	nackingSince time.Time // the first nack in a row
	holdUntil    time.Time
	holdTimer    *time.Timer
	nackLogged   time.Time
	nacksQuiet   int
}

func (r *run) unconfirmed() int {
	n := 0
	for _, b := range r.pending {
		n += b.Records
	}
	for _, b := range r.retry {
		n += b.Records
	}
	return n
}

func (r *run) gauge() { r.p.cfg.Metrics.InFlight.Set(float64(len(r.pending) + len(r.retry))) }

// lost ends a session: what was unconfirmed is published again on the
// next one (or spilled to the spool). It returns why.
func (r *run) lost(why error) error {
	p := r.p
	p.setBlocked(amqp.Blocking{})
	if len(r.pending) > 0 || len(r.retry) > 0 {
		p.cfg.Logger.Warn("broker connection lost; unconfirmed batches will be published again",
			"err", why, "batches", len(r.pending)+len(r.retry), "records", r.unconfirmed())
	}
	r.retry = append(r.pending, r.retry...)
	r.pending = nil
	if p.spill != nil && !r.inClosed {
		r.retry = slices.DeleteFunc(r.retry, func(b Batch) bool { return !b.spooled && p.spill(b) })
	}
	r.gauge()
	return why
}

// session publishes on one connection: a channel in confirm mode, with the
// notifications registered anew.
func (r *run) session(ctx context.Context, conn *broker.Conn) error {
	p, log, m := r.p, r.p.cfg.Logger, r.p.cfg.Metrics
	ch, err := conn.Channel()
	if err != nil {
		return r.lost(fmt.Errorf("open channel: %w", err))
	}
	if err := ch.Confirm(false); err != nil {
		return r.lost(fmt.Errorf("confirm mode: %w", err))
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, p.cfg.MaxInFlight+1))
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	nextTag := uint64(1)
	conn.Ready()
	log.Info("publishing to broker", "exchange", topology.RecordsExchange, "republish", len(r.retry))

	publish := func(b Batch) error {
		err := ch.PublishWithContext(ctx, topology.RecordsExchange, "", false, false, amqp.Publishing{
			ContentType:  record.ContentTypeBinary,
			Headers:      amqp.Table{record.VersionHeader: int32(record.Version)},
			DeliveryMode: amqp.Persistent,
			Timestamp:    time.Unix(0, b.Ingest),
			Body:         b.Body,
		})
		if err != nil {
			return err
		}
		b.tag = nextTag
		nextTag++
		if b.republished {
			m.Republished.Inc()
		}
		m.Published.Add(float64(b.Records))
		r.pending = append(r.pending, b)
		r.gauge()
		return nil
	}

	for {
		if r.inClosed && len(r.pending) == 0 && len(r.retry) == 0 {
			return nil
		}
		// Batches to publish again go first, within the window.
		var hold <-chan time.Time
		blocked, _ := p.Blocked()
		if blocked {
			// The broker reads nothing from a blocked connection: publish
			// nothing (the shipper spools) until it unblocks.
		} else if len(r.retry) > 0 && time.Now().Before(r.holdUntil) {
			r.holdTimer.Reset(time.Until(r.holdUntil))
			hold = r.holdTimer.C
		} else if len(r.retry) > 0 && len(r.pending) < p.cfg.MaxInFlight {
			b := r.retry[0]
			b.republished = true
			if err := publish(b); err != nil {
				return r.lost(fmt.Errorf("publish: %w", err))
			}
			r.retry = r.retry[1:]
			r.gauge()
			continue
		}
		var recv <-chan Batch
		if !r.inClosed && !blocked && len(r.retry) == 0 && len(r.pending) < p.cfg.MaxInFlight {
			recv = r.in
		}
		select {
		case b, ok := <-recv:
			if !ok {
				r.inClosed = true
				continue
			}
			if err := publish(b); err != nil {
				r.retry = append(r.retry, b)
				return r.lost(fmt.Errorf("publish: %w", err))
			}
		case c, ok := <-confirms:
			if !ok {
				return r.lost(errors.New("channel closed"))
			}
			r.confirm(c)
			if d := time.Since(r.nackingSince); r.nacksInRow > 1 && d >= renewAfterNacks {
				r.nacksInRow = 0
				return r.lost(fmt.Errorf("every publish nacked for %s: opening another connection", d.Round(time.Second)))
			}
		case <-hold:
		case bl := <-blocks:
			p.setBlocked(bl)
			if bl.Active {
				log.Warn("broker blocked publishing (a resource alarm); batches go to the spool",
					"reason", bl.Reason, "unconfirmed", len(r.pending))
			} else {
				log.Info("broker unblocked publishing")
			}
		case <-conn.Closed():
			return r.lost(conn.Err())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// confirm settles the batch c confirms: done when acked, published again
// (after a hold) when nacked.
func (r *run) confirm(c amqp.Confirmation) {
	log, m := r.p.cfg.Logger, r.p.cfg.Metrics
	i := 0
	for i < len(r.pending) && r.pending[i].tag != c.DeliveryTag {
		i++
	}
	if i == len(r.pending) {
		log.Debug("confirmation for an unknown delivery tag", "tag", c.DeliveryTag)
		return
	}
	b := r.pending[i]
	r.pending = append(r.pending[:i], r.pending[i+1:]...)
	if c.Ack {
		m.Confirmed.Add(float64(b.Records))
		r.nacksInRow = 0
		r.p.rejecting.Store(0)
		if r.p.confirmed != nil {
			r.p.confirmed(b)
		}
	} else {
		m.Nacked.Inc()
		r.nacksInRow++
		if r.nacksInRow == 1 {
			r.nackingSince = time.Now()
			r.p.rejecting.CompareAndSwap(0, r.nackingSince.UnixNano())
		}
		r.holdUntil = time.Now().Add(min(nackHoldMin<<min(r.nacksInRow-1, 10), nackHoldMax))
		if time.Since(r.nackLogged) >= nackLogEvery {
			log.Warn("broker nacked batches; publishing them again", "nacked", r.nacksQuiet+1, "records", b.Records)
			r.nackLogged, r.nacksQuiet = time.Now(), 0
		} else {
			r.nacksQuiet++
		}
		r.retry = append(r.retry, b)
	}
	r.gauge()
}

// stopped keeps the unconfirmed batches and those waiting in in (taking
// them) as p.leftover and says how many records they hold.
func (p *Publisher) stopped(ctx context.Context, pending, retry []Batch, in <-chan Batch, closed bool) error {
	left := append(append([]Batch(nil), pending...), retry...)
	for !closed {
		select {
		case b, ok := <-in:
			if !ok {
				closed = true
				continue
			}
			left = append(left, b)
			continue
		default:
		}
		break
	}
	p.leftover = left
	records := 0
	for _, b := range left {
		records += b.Records
	}
	if records == 0 {
		return nil
	}
	return fmt.Errorf("publisher stopped with %d records unconfirmed: %w", records, context.Cause(ctx))
}
