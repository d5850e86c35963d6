// Package control defines the routing control log: the JSON messages that
// change routing at runtime and the deterministic fold that turns the log
// into the routing table in force.
//
// The log is the RabbitMQ stream conn.control. Every consumer (and admin)
// reads it from the first message and folds every message, in order, with
// Apply. Because Apply depends only on the previous table and the message,
// all readers reach the same table, the same version, and the same verdict
// on every message — including a refused one.
//
// # Messages
//
// Set weights (names not listed keep their weight; 0 drains a backend):
//
//	{"op":"set_weights","weights":{"redis-a":50,"redis-b":50}}
//
// Optional fields on any change: "expect_version" (refuse the change unless
// the table is at exactly that version, like HTTP If-Match), "id" (a
// client-chosen id echoed in logs and results), "by" (who sent it).
//
//	{"op":"set_weights","weights":{"redis-a":30},"expect_version":4,"id":"ops-17","by":"alice"}
//
// A sync marker changes nothing; a reader publishes one with a fresh id and
// knows it has read the whole log once it reads its own marker back:
//
//	{"op":"sync","id":"consumer-7f3a-1"}
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Operations.
const (
	OpSetWeights = "set_weights"
	OpSync       = "sync"
)

// Limits on a change.
const (
	MaxWeight  = 256
	MaxMessage = 64 << 10
)

// Errors that make Apply refuse a message. Every refusal wraps one of them.
var (
	ErrMalformed      = errors.New("malformed control message")
	ErrUnknownOp      = errors.New("unknown op")
	ErrUnknownBackend = errors.New("unknown backend")
	ErrBadWeight      = errors.New("weight out of range 0..256")
	ErrNoCapacity     = errors.New("change leaves every backend at weight 0")
	ErrStaleVersion   = errors.New("stale version")
)

// Message is one entry of the control log.
type Message struct {
	Op            string         `json:"op"`
	Weights       map[string]int `json:"weights,omitempty"`
	ExpectVersion *int64         `json:"expect_version,omitempty"`
	ID            string         `json:"id,omitempty"`
	By            string         `json:"by,omitempty"`
}

// Backend is one Redis instance in the routing table.
type Backend struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Weight int    `json:"weight"`
}

// Table is the routing table in force. A Table is never modified after it
// is built; Apply returns a new one.
type Table struct {
	// Version counts the changes applied since the initial table (0).
	Version int64 `json:"version"`
	// Position is the log offset of the last message folded, -1 before any.
	Position int64 `json:"position"`
	// Backends in name order.
	Backends []Backend `json:"backends"`
}

// NewTable builds the initial table (version 0) from configured backends.
func NewTable(backends []Backend) (*Table, error) {
	if len(backends) == 0 {
		return nil, errors.New("no backends configured")
	}
	t := &Table{Position: -1, Backends: append([]Backend(nil), backends...)}
	sort.Slice(t.Backends, func(i, j int) bool { return t.Backends[i].Name < t.Backends[j].Name })
	total := 0
	for i, b := range t.Backends {
		if i > 0 && t.Backends[i-1].Name == b.Name {
			return nil, fmt.Errorf("backend %q listed twice", b.Name)
		}
		if b.Weight < 0 || b.Weight > MaxWeight {
			return nil, fmt.Errorf("backend %q: %w: %d", b.Name, ErrBadWeight, b.Weight)
		}
		total += b.Weight
	}
	if total == 0 {
		return nil, ErrNoCapacity
	}
	return t, nil
}

// Weights returns name → weight.
func (t *Table) Weights() map[string]int {
	m := make(map[string]int, len(t.Backends))
	for _, b := range t.Backends {
		m[b.Name] = b.Weight
	}
	return m
}

// Backend returns the backend named name.
func (t *Table) Backend(name string) (Backend, bool) {
	for _, b := range t.Backends {
		if b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}

// String renders the weights as "redis-a=30 redis-b=70".
func (t *Table) String() string {
	parts := make([]string, len(t.Backends))
	for i, b := range t.Backends {
		parts[i] = fmt.Sprintf("%s=%d", b.Name, b.Weight)
	}
	return strings.Join(parts, " ")
}

// Parse decodes and checks the shape of a control message. Unknown fields
// are refused, so a misspelt "weigths" is an error, not a silent no-op.
func Parse(body []byte) (Message, error) {
	var m Message
	if len(body) > MaxMessage {
		return m, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(body), MaxMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return m, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformed)
	}
	switch m.Op {
	case OpSync:
	case OpSetWeights:
		if len(m.Weights) == 0 {
			return m, fmt.Errorf("%w: set_weights without weights", ErrMalformed)
		}
	case "":
		return m, fmt.Errorf("%w: missing \"op\"", ErrMalformed)
	default:
		return m, fmt.Errorf("%w %q (want %s or %s)", ErrUnknownOp, m.Op, OpSetWeights, OpSync)
	}
	return m, nil
}

// Result is the verdict on one folded message.
type Result struct {
	Position int64   // log offset of the message
	Message  Message // as parsed (zero if it did not parse)
	Changed  bool    // the table changed (Version went up)
	Err      error   // why the message was refused; nil if applied or a marker
}

// Apply folds the message at log offset pos into t. It always returns a
// table: the new one if the change applied, otherwise t with only its
// Position advanced. The verdict is in the Result.
func Apply(t *Table, pos int64, body []byte) (*Table, Result) {
	res := Result{Position: pos}
	next := *t
	next.Position = pos
	m, err := Parse(body)
	res.Message = m
	if err != nil {
		res.Err = err
		return &next, res
	}
	if m.Op == OpSync {
		return &next, res
	}
	if m.ExpectVersion != nil && *m.ExpectVersion != t.Version {
		res.Err = fmt.Errorf("%w: expected version %d, table is at %d", ErrStaleVersion, *m.ExpectVersion, t.Version)
		return &next, res
	}
	backends := append([]Backend(nil), t.Backends...)
	// Check every name and weight before changing anything, in name order so
	// the reported error is the same on every reader.
	names := make([]string, 0, len(m.Weights))
	for name := range m.Weights {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		w := m.Weights[name]
		i := index(backends, name)
		if i < 0 {
			res.Err = fmt.Errorf("%w %q (known: %s)", ErrUnknownBackend, name, strings.Join(backendNames(backends), ", "))
			return &next, res
		}
		if w < 0 || w > MaxWeight {
			res.Err = fmt.Errorf("backend %q: %w: %d", name, ErrBadWeight, w)
			return &next, res
		}
		backends[i].Weight = w
	}
	total := 0
	for _, b := range backends {
		total += b.Weight
	}
	if total == 0 {
		res.Err = ErrNoCapacity
		return &next, res
	}
	next.Backends = backends
	next.Version = t.Version + 1
	res.Changed = true
	return &next, res
}

func index(bs []Backend, name string) int {
	for i, b := range bs {
		if b.Name == name {
			return i
		}
	}
	return -1
}

func backendNames(bs []Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}

// Heartbeat is what a consumer publishes on the heartbeat exchange, at a
// fixed interval and right after it applies a change.
type Heartbeat struct {
	Consumer string `json:"consumer"` // unique per process
	Host     string `json:"host"`
	Version  int64  `json:"version"`  // table version in force
	Position int64  `json:"position"` // last control-log offset folded
	Weights  string `json:"weights"`  // Table.String() of the table in force
	Ready    bool   `json:"ready"`    // has read the whole log and is routing
	Records  uint64 `json:"records"`  // records stored since start
	// Stored is records stored since start per backend name, so readers can
	// compute each instance's observed share over any window from deltas.
	Stored   map[string]uint64 `json:"stored,omitempty"`
	Unacked  int               `json:"unacked"`  // messages held, not yet acked
	Acked    uint64            `json:"acked"`    // messages acked since start
	SentAt   int64             `json:"sent_at"`  // Unix ns
	Interval int64             `json:"interval"` // ms until the next heartbeat at the latest
}
