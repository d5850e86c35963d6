// Package heartbeat is the consumers' heartbeat: the message each consumer
// publishes on topology.HeartbeatExchange at a fixed interval and right
// after it applies a change, how it is published, and how it is decoded.
// Admin keeps the membership from the heartbeats it reads.
package heartbeat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Message is one heartbeat, as JSON.
type Message struct {
	Consumer string `json:"consumer"` // unique per process
	Host     string `json:"host"`
	Version  int64  `json:"version"`  // table version in force
	Position int64  `json:"position"` // last control-log offset folded
	Weights  string `json:"weights"`  // Table.String() of the table in force
	Ready    bool   `json:"ready"`    // has read the whole log and is routing
	Records  uint64 `json:"records"`  // records stored since start
	// Stored is records stored since start per backend name, so readers can
	// compute each instance's observed share over any window from deltas.
	Stored  map[string]uint64 `json:"stored,omitempty"`
	Unacked int               `json:"unacked"` // messages held, not yet acked
	Acked   uint64            `json:"acked"`   // messages acked since start
	// DeadLettered is records messages sent to the dead-letter queue since
	// start (undecodable or over MAX_MESSAGE_BYTES).
	DeadLettered uint64 `json:"dead_lettered,omitempty"`
	// Backends are the backends out of rotation: name → state, why and
	// since when.
	Backends map[string]Backend `json:"backends,omitempty"`
	// Out is Backends as an admin of the release before it reads them:
	// name → "state: reason". Decode reads it only from a consumer that
	// sends no Backends (that release), for a rolling upgrade in either
	// order.
	Out      map[string]string `json:"out,omitempty"`
	SentAt   int64             `json:"sent_at"`  // Unix ns
	Interval int64             `json:"interval"` // ms until the next heartbeat at the latest
}

// Backend is a backend's state as a consumer reports it.
type Backend struct {
	State  redisconn.State `json:"state"`
	Reason string          `json:"reason,omitempty"` // the error that set the state, passwords redacted
	Since  int64           `json:"since,omitempty"`  // Unix ns, when it entered the state
}

// SetBackends sets m.Backends to out and m.Out to the same, in the form
// of the release before.
func (m *Message) SetBackends(out map[string]Backend) {
	m.Backends, m.Out = out, nil
	for name, b := range out {
		if m.Out == nil {
			m.Out = make(map[string]string, len(out))
		}
		m.Out[name] = b.State.String() + ": " + b.Reason
	}
}

// Publishing is m as the message published on the heartbeat exchange:
// JSON, transient (a heartbeat is stale by the time a restarted broker
// could deliver it).
func Publishing(m Message) (amqp.Publishing, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("encode heartbeat: %w", err)
	}
	return amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Transient, Body: body,
		Timestamp: time.Unix(0, m.SentAt), AppId: "connpipe-consumer", Type: "heartbeat",
	}, nil
}

// Bounds of a heartbeat a reader accepts. A real one is a few hundred
// bytes: one map entry per backend of the table, an id and a host name.
const (
	MaxBytes   = 64 << 10            // body size
	MaxEntries = control.MaxBackends // entries of Stored and of Out
	MaxIDLen   = 256                 // bytes of Consumer and of Host
)

// Why Decode refuses a heartbeat; each error wraps one of these.
var (
	ErrInvalid        = errors.New("invalid heartbeat")
	ErrTooLarge       = errors.New("heartbeat too large")
	ErrTooManyEntries = errors.New("heartbeat map has too many entries")
)

// Decode decodes a heartbeat message. It must name the consumer and stay
// within MaxBytes, MaxEntries and MaxIDLen; a body over MaxBytes is
// refused before it is parsed.
func Decode(body []byte) (Message, error) {
	var m Message
	if len(body) > MaxBytes {
		return m, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(body), MaxBytes)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("%w %.80q: %w", ErrInvalid, body, err)
	}
	switch {
	case m.Consumer == "":
		return m, fmt.Errorf("%w %.80q: no \"consumer\" id", ErrInvalid, body)
	case len(m.Consumer) > MaxIDLen || len(m.Host) > MaxIDLen:
		return m, fmt.Errorf("%w: consumer id or host over %d bytes", ErrTooLarge, MaxIDLen)
	case len(m.Stored) > MaxEntries || len(m.Out) > MaxEntries || len(m.Backends) > MaxEntries:
		return m, fmt.Errorf("%w: %d stored and %d out, at most %d each", ErrTooManyEntries, len(m.Stored), max(len(m.Out), len(m.Backends)), MaxEntries)
	}
	if m.Backends == nil && len(m.Out) > 0 {
		m.Backends = fromOut(m.Out)
	}
	return m, nil
}

// fromOut reads the Out of a consumer of the release before, which sends
// no Backends.
func fromOut(out map[string]string) map[string]Backend {
	bs := make(map[string]Backend, len(out))
	for name, why := range out {
		state, reason, _ := strings.Cut(why, ": ")
		var b Backend
		_ = b.State.UnmarshalText([]byte(state)) // an unknown name reads as down
		b.Reason = reason
		bs[name] = b
	}
	return bs
}

// Reason names err from Decode for a counter: invalid, too_large or
// too_many_entries.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrTooManyEntries):
		return "too_many_entries"
	}
	return "invalid"
}

// Config configures a Publisher.
type Config struct {
	URL      string
	Name     string          // connection name, shown in the management UI
	Beat     func() Message  // the heartbeat to send now
	Interval time.Duration   // time.Second if 0
	Kick     <-chan struct{} // each receive sends a heartbeat at once
	Logger   *slog.Logger
}

// Publisher publishes a consumer's heartbeat every Interval and on each
// kick, under a broker.Session of its own.
type Publisher struct {
	cfg  Config
	sess broker.Session
}

// NewPublisher returns a Publisher; call Run.
func NewPublisher(cfg Config) *Publisher {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{cfg: cfg}
	p.sess = broker.Session{URL: cfg.URL, Name: cfg.Name, Log: cfg.Logger}
	return p
}

// Broker is the state of the publisher's broker session.
func (p *Publisher) Broker() broker.Status { return p.sess.Status() }

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	return p.sess.Run(ctx, p.session)
}

func (p *Publisher) session(ctx context.Context, conn *broker.Conn) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open heartbeat channel: %w", err)
	}
	defer ch.Close()
	conn.Ready()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		msg, err := Publishing(p.cfg.Beat())
		if err != nil {
			return err
		}
		if err := ch.PublishWithContext(ctx, topology.HeartbeatExchange, "", false, false, msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if cerr := conn.Err(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("publish heartbeat on %q: %w", topology.HeartbeatExchange, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-conn.Closed():
			return conn.Err()
		case <-t.C:
		case <-p.cfg.Kick:
		}
	}
}
