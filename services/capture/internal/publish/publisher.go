package publish

import (
	"context"
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
// channel (at-least-once: a batch may arrive twice, none is lost).
type Publisher struct {
	cfg       PublisherConfig
	connected atomic.Bool
	blocked   atomic.Pointer[string] // the broker's reason while blocked, else nil
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
	// dial is broker.Dial; tests may replace it.
	dial func(ctx context.Context, url, name string, log *slog.Logger) (*amqp.Connection, error)
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
	return &Publisher{cfg: cfg, dial: broker.Dial}
}

// Connected reports whether the publisher has a confirmed channel open.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// Blocked reports whether the broker has blocked publishing on the
// connection (connection.blocked, sent on a memory or disk alarm), and the
// broker's reason.
func (p *Publisher) Blocked() (bool, string) {
	if r := p.blocked.Load(); r != nil {
		return true, *r
	}
	return false, ""
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

// confirmChannel is one connection with its confirm-mode channel.
type confirmChannel struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
	closed   chan *amqp.Error
	blocks   chan amqp.Blocking
	nextTag  uint64
}

func (s *confirmChannel) close() {
	if s != nil && s.conn != nil {
		_ = s.conn.Close()
	}
}

// nackLogEvery bounds how often nacks are logged at Warn.
const nackLogEvery = 10 * time.Second

// After a nack, batches wait nackHoldMin before they are published again,
// doubling with each further nack in a row up to nackHoldMax.
const (
	nackHoldMin = 20 * time.Millisecond
	nackHoldMax = time.Second
)

// Run publishes the batches received on in until in is closed and every
// batch is confirmed, then returns nil. It reconnects (with backoff) as
// often as needed. When ctx ends first it returns an error that says how
// many records were left unconfirmed.
func (p *Publisher) Run(ctx context.Context, in <-chan Batch) error {
	log, m := p.cfg.Logger, p.cfg.Metrics
	var (
		s        *confirmChannel
		pending  []Batch // published, unconfirmed, in tag order
		retry    []Batch // to publish again, in order
		inClosed bool
		failures int
		// After a nack, batches wait before going out again (the broker
		// may be rejecting publishes: a full queue), longer after each
		// nack in a row.
		nacksInRow int
		holdUntil  time.Time
		holdTimer  = time.NewTimer(0)
		nackLogged time.Time
		nacksQuiet int
	)
	<-holdTimer.C
	defer func() {
		p.connected.Store(false)
		p.setBlocked(amqp.Blocking{})
		s.close()
	}()
	unconfirmed := func() int {
		n := 0
		for _, b := range pending {
			n += b.Records
		}
		for _, b := range retry {
			n += b.Records
		}
		return n
	}
	gauge := func() { m.InFlight.Set(float64(len(pending) + len(retry))) }
	lost := func(why error) {
		p.connected.Store(false)
		p.setBlocked(amqp.Blocking{})
		if len(pending) > 0 || len(retry) > 0 {
			log.Warn("broker connection lost; unconfirmed batches will be published again",
				"err", why, "batches", len(pending)+len(retry), "records", unconfirmed())
		} else {
			log.Warn("broker connection lost", "err", why)
		}
		retry = append(pending, retry...)
		pending = nil
		if p.spill != nil && !inClosed {
			retry = slices.DeleteFunc(retry, func(b Batch) bool { return !b.spooled && p.spill(b) })
		}
		s.close()
		s = nil
		gauge()
	}
	publish := func(b Batch) error {
		err := s.ch.PublishWithContext(ctx, topology.RecordsExchange, "", false, false, amqp.Publishing{
			ContentType:  record.ContentTypeBinary,
			Headers:      amqp.Table{record.VersionHeader: int32(record.Version)},
			DeliveryMode: amqp.Persistent,
			Timestamp:    time.Unix(0, b.Ingest),
			Body:         b.Body,
		})
		if err != nil {
			return err
		}
		b.tag = s.nextTag
		s.nextTag++
		if b.republished {
			m.Republished.Inc()
		}
		m.Published.Add(float64(b.Records))
		pending = append(pending, b)
		gauge()
		return nil
	}

	for {
		if inClosed && len(pending) == 0 && len(retry) == 0 {
			return nil
		}
		if s == nil {
			if failures > 0 {
				select {
				case <-ctx.Done():
					return p.stopped(ctx, pending, retry, in, inClosed)
				case <-time.After(broker.DefaultBackoff.Delay(failures - 1)):
				}
			}
			var err error
			s, err = p.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return p.stopped(ctx, pending, retry, in, inClosed)
				}
				failures++
				log.Warn("open confirm channel", "err", err)
				continue
			}
			failures = 0
			p.connected.Store(true)
			log.Info("publishing to broker", "exchange", topology.RecordsExchange, "republish", len(retry))
		}
		// Batches to publish again go first, within the window.
		var hold <-chan time.Time
		blocked, _ := p.Blocked()
		if blocked {
			// The broker reads nothing from a blocked connection: publish
			// nothing (the shipper spools) until it unblocks.
		} else if len(retry) > 0 && time.Now().Before(holdUntil) {
			holdTimer.Reset(time.Until(holdUntil))
			hold = holdTimer.C
		} else if len(retry) > 0 && len(pending) < p.cfg.MaxInFlight {
			b := retry[0]
			b.republished = true
			if err := publish(b); err != nil {
				lost(fmt.Errorf("publish: %w", err))
				continue
			}
			retry = retry[1:]
			gauge()
			continue
		}
		var recv <-chan Batch
		if !inClosed && !blocked && len(retry) == 0 && len(pending) < p.cfg.MaxInFlight {
			recv = in
		}
		select {
		case b, ok := <-recv:
			if !ok {
				inClosed = true
				continue
			}
			if err := publish(b); err != nil {
				retry = append(retry, b)
				lost(fmt.Errorf("publish: %w", err))
			}
		case c, ok := <-s.confirms:
			if !ok {
				lost(fmt.Errorf("channel closed"))
				continue
			}
			i := 0
			for i < len(pending) && pending[i].tag != c.DeliveryTag {
				i++
			}
			if i == len(pending) {
				log.Debug("confirmation for an unknown delivery tag", "tag", c.DeliveryTag)
				continue
			}
			b := pending[i]
			pending = append(pending[:i], pending[i+1:]...)
			if c.Ack {
				m.Confirmed.Add(float64(b.Records))
				nacksInRow = 0
				if p.confirmed != nil {
					p.confirmed(b)
				}
			} else {
				m.Nacked.Inc()
				nacksInRow++
				holdUntil = time.Now().Add(min(nackHoldMin<<min(nacksInRow-1, 10), nackHoldMax))
				if time.Since(nackLogged) >= nackLogEvery {
					log.Warn("broker nacked batches; publishing them again", "nacked", nacksQuiet+1, "records", b.Records)
					nackLogged, nacksQuiet = time.Now(), 0
				} else {
					nacksQuiet++
				}
				retry = append(retry, b)
			}
			gauge()
		case <-hold:
		case bl := <-s.blocks:
			p.setBlocked(bl)
			if bl.Active {
				log.Warn("broker blocked publishing (a resource alarm); batches go to the spool",
					"reason", bl.Reason, "unconfirmed", len(pending))
			} else {
				log.Info("broker unblocked publishing")
			}
		case err := <-s.closed:
			lost(fmt.Errorf("connection closed: %v", err))
		case <-ctx.Done():
			return p.stopped(ctx, pending, retry, in, inClosed)
		}
	}
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

// connect dials (with backoff), opens a channel in confirm mode and
// registers the notifications anew.
func (p *Publisher) connect(ctx context.Context) (*confirmChannel, error) {
	conn, err := p.dial(ctx, p.cfg.URL, p.cfg.Name, p.cfg.Logger)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	s := &confirmChannel{
		conn:     conn,
		ch:       ch,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, p.cfg.MaxInFlight+1)),
		closed:   conn.NotifyClose(make(chan *amqp.Error, 1)),
		blocks:   conn.NotifyBlocked(make(chan amqp.Blocking, 4)),
		nextTag:  1,
	}
	return s, nil
}
