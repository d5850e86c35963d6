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
// Choose the routing mode. "weighted" (the default) splits records in exact
// proportion to the weights; "hash" sends every record with the same key to
// the same instance by weighted consistent hashing, the key being the
// source IP ("src", the default), the destination IP ("dst"), both ("pair")
// or the flow 5-tuple ("flow"). "sticky" adds a stick table on top of
// either mode: a key stays on the instance where it first landed for the
// retention window, even when weights change. Fields left out keep their
// current value:
//
//	{"op":"set_mode","mode":"hash","hash_key":"src","sticky":true}
//	{"op":"set_mode","mode":"weighted","sticky":false}
//
// Add a Redis instance at runtime (consumers connect to it as soon as they
// fold the message; the name is 1–64 letters, digits, '.', '_' or '-', the
// address host:port or a redis:// or rediss:// URL (see CheckAddr), and the
// weight 0–256, 1 if left out):
//
//	{"op":"add_backend","backend":{"name":"redis-c","addr":"127.0.0.1:6381","weight":50}}
//	{"op":"add_backend","backend":{"name":"redis-d","addr":"rediss://consumer:PASSWORD@10.0.0.9:6380/0"}}
//
// A consumer connects only to hosts its BACKEND_ALLOW lets it (see Allow).
// That check is the reader's own and not part of the fold: the change is
// folded alike everywhere, and a consumer that may not reach the host
// counts the change as refused and routes as if the backend were not in
// the table.
//
// Remove one (refused if no backend with weight > 0 would remain; to drain
// it first, set its weight to 0):
//
//	{"op":"remove_backend","name":"redis-c"}
//
// A refused message changes nothing, on every reader alike; the reason is
// in its verdict (Result.Err).
//
// The starting table lives in the log too: the first writer (admin, from
// its BACKENDS and WEIGHTS) seeds it, and only the first seed of a log
// applies, so every reader folds the same table whatever its own
// environment says (see Seed):
//
//	{"op":"seed","table":{"backends":[{"name":"redis-a","addr":"redis-a:6379","weight":30},…]},"expect_version":0}
//
// A sync marker changes nothing. Older readers published one to learn they
// had read the log to its end; it is still accepted, and still a no-op:
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

	"github.com/connpipe/connpipe/shared/redact"
)

// Operations.
const (
	OpSetWeights    = "set_weights"
	OpSetMode       = "set_mode"
	OpAddBackend    = "add_backend"
	OpRemoveBackend = "remove_backend"
	OpSync          = "sync"
	OpSeed          = "seed"
)

// MaxNameLen bounds a backend name.
const MaxNameLen = 64

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
	ErrBadMode        = errors.New("bad routing mode")
	ErrBadBackend     = errors.New("bad backend")
	ErrDuplicate      = errors.New("backend already exists")
	ErrTooMany        = errors.New("too many backends")
	ErrSeeded         = errors.New("the log already has a starting table")
)

// Message is one entry of the control log.
type Message struct {
	Op            string         `json:"op"`
	Weights       map[string]int `json:"weights,omitempty"`
	Mode          Mode           `json:"mode,omitempty"`     // set_mode
	HashKey       HashKey        `json:"hash_key,omitempty"` // set_mode
	Sticky        *bool          `json:"sticky,omitempty"`   // set_mode
	Backend       *Backend       `json:"backend,omitempty"`  // add_backend
	Name          string         `json:"name,omitempty"`     // remove_backend
	Table         *Table         `json:"table,omitempty"`    // seed
	ExpectVersion *int64         `json:"expect_version,omitempty"`
	ID            string         `json:"id,omitempty"`
	By            string         `json:"by,omitempty"`
}

// Backend is one Redis instance in the routing table.
type Backend struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Weight int    `json:"weight"`
	// Credential names the login each reader presents to this backend,
	// resolved from its own environment (REDIS_CREDENTIALS), so no
	// password is written into the control log.
	Credential string `json:"credential,omitempty"`
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
	// Mode is ModeWeighted or ModeHash; "" means ModeWeighted.
	Mode Mode `json:"mode,omitempty"`
	// HashKey is what ModeHash hashes; "" means KeySrc.
	HashKey HashKey `json:"hash_key,omitempty"`
	// Sticky turns the stick table on.
	Sticky bool `json:"sticky,omitempty"`
	// Seeded: the table started from a seed in the log, not from the
	// reader's environment.
	Seeded bool `json:"seeded,omitempty"`
}

// RoutingMode is the mode in force, ModeWeighted when Mode is "".
func (t *Table) RoutingMode() Mode { return t.Mode.Info().Mode }

// Key is the hash key in force, KeySrc when HashKey is "".
func (t *Table) Key() HashKey { return t.HashKey.Info().Key }

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
		if err := CheckBackend(b); err != nil {
			return nil, err
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

// Describe renders the whole table: "v3 mode=hash key=src sticky=true
// redis-a=30@127.0.0.1:6379 redis-b=70@127.0.0.1:6380". String stays the
// weights alone.
func (t *Table) Describe() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "v%d mode=%s", t.Version, t.RoutingMode())
	if t.RoutingMode().Info().Hashed {
		fmt.Fprintf(&sb, " key=%s", t.Key())
	}
	fmt.Fprintf(&sb, " sticky=%t", t.Sticky)
	for _, b := range t.Backends {
		fmt.Fprintf(&sb, " %s=%d@%s", b.Name, b.Weight, redact.Addr(b.Addr))
		if b.Credential != "" {
			fmt.Fprintf(&sb, "[%s]", b.Credential)
		}
	}
	return sb.String()
}

// CheckName reports whether name is a valid backend name: 1 to MaxNameLen
// ASCII letters, digits, '.', '_' or '-'.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: name %q: want 1 to %d characters", ErrBadBackend, name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: name %q: only letters, digits, '.', '_' and '-'", ErrBadBackend, name)
		}
	}
	return nil
}

// CheckBackend validates one backend's name, address and weight. The
// address is checked only when set, for tables built by hand in tests.
func CheckBackend(b Backend) error {
	if err := CheckName(b.Name); err != nil {
		return err
	}
	if b.Addr != "" {
		if err := CheckAddr(b.Addr); err != nil {
			return fmt.Errorf("backend %q: %w", b.Name, err)
		}
	}
	if b.Weight < 0 || b.Weight > MaxWeight {
		return fmt.Errorf("backend %q: %w: %d", b.Name, ErrBadWeight, b.Weight)
	}
	if b.Credential != "" {
		if err := CheckName(b.Credential); err != nil {
			return fmt.Errorf("backend %q: credential: %w", b.Name, err)
		}
		if HasPassword(b.Addr) {
			return fmt.Errorf("backend %q: %w: name a credential or put a password in the address, not both", b.Name, ErrBadBackend)
		}
	}
	return nil
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
		if errors.Is(err, ErrBadMode) {
			return m, err // a mode or hash key of no row: named as such
		}
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
	case OpSetMode:
		if m.Mode == "" && m.HashKey == "" && m.Sticky == nil {
			return m, fmt.Errorf("%w: set_mode without mode, hash_key or sticky", ErrMalformed)
		}
	case OpAddBackend:
		if m.Backend == nil {
			return m, fmt.Errorf("%w: add_backend without backend", ErrMalformed)
		}
	case OpRemoveBackend:
		if m.Name == "" {
			return m, fmt.Errorf("%w: remove_backend without name", ErrMalformed)
		}
	case OpSeed:
		if m.Table == nil {
			return m, fmt.Errorf("%w: seed without table", ErrMalformed)
		}
	case "":
		return m, fmt.Errorf("%w: missing \"op\"", ErrMalformed)
	default:
		return m, fmt.Errorf("%w %q (want %s, %s, %s, %s, %s or %s)", ErrUnknownOp, m.Op,
			OpSetWeights, OpSetMode, OpAddBackend, OpRemoveBackend, OpSeed, OpSync)
	}
	return m, nil
}

// Result is the verdict on one folded message.
type Result struct {
	Position int64   // log offset of the message
	Message  Message // as parsed (zero if it did not parse)
	Changed  bool    // the routing changed (a change raises Version; the seed keeps 0)
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
	if m.Op == OpSeed {
		return applySeed(t, &next, m, res)
	}
	var err2 error
	switch m.Op {
	case OpSetMode:
		err2 = applyMode(&next, m)
	case OpAddBackend:
		err2 = applyAdd(&next, t, *m.Backend)
	case OpRemoveBackend:
		err2 = applyRemove(&next, t, m.Name)
	default:
		err2 = applyWeights(&next, t, m)
	}
	if err2 != nil {
		res.Err = err2
		next.Backends, next.Mode, next.HashKey, next.Sticky = t.Backends, t.Mode, t.HashKey, t.Sticky
		return &next, res
	}
	next.Version = t.Version + 1
	res.Changed = true
	return &next, res
}

func applyMode(next *Table, m Message) error {
	if m.Mode != "" {
		mode, err := ParseMode(string(m.Mode))
		if err != nil {
			return err
		}
		next.Mode = mode
	}
	if m.HashKey != "" {
		key, err := ParseHashKey(string(m.HashKey))
		if err != nil {
			return err
		}
		next.HashKey = key
	}
	if m.Sticky != nil {
		next.Sticky = *m.Sticky
	}
	return nil
}

func applyAdd(next *Table, t *Table, b Backend) error {
	if err := CheckName(b.Name); err != nil {
		return err
	}
	if b.Addr == "" {
		return fmt.Errorf("backend %q: %w: addr missing: want host:port", b.Name, ErrBadBackend)
	}
	if err := CheckBackend(b); err != nil {
		return err
	}
	if index(t.Backends, b.Name) >= 0 {
		return fmt.Errorf("%w: %q (remove it first to change its address)", ErrDuplicate, b.Name)
	}
	if len(t.Backends) >= MaxBackends {
		return fmt.Errorf("%w: the table has %d, at most %d", ErrTooMany, len(t.Backends), MaxBackends)
	}
	bs := make([]Backend, 0, len(t.Backends)+1)
	bs = append(bs, t.Backends...)
	bs = append(bs, b)
	sort.Slice(bs, func(i, j int) bool { return bs[i].Name < bs[j].Name })
	next.Backends = bs
	return nil
}

func applyRemove(next *Table, t *Table, name string) error {
	i := index(t.Backends, name)
	if i < 0 {
		return fmt.Errorf("%w %q (known: %s)", ErrUnknownBackend, name, strings.Join(backendNames(t.Backends), ", "))
	}
	bs := make([]Backend, 0, len(t.Backends)-1)
	bs = append(bs, t.Backends[:i]...)
	bs = append(bs, t.Backends[i+1:]...)
	total := 0
	for _, b := range bs {
		total += b.Weight
	}
	if total == 0 {
		return fmt.Errorf("%w: removing %q", ErrNoCapacity, name)
	}
	next.Backends = bs
	return nil
}

func applyWeights(next *Table, t *Table, m Message) error {
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
			return fmt.Errorf("%w %q (known: %s)", ErrUnknownBackend, name, strings.Join(backendNames(backends), ", "))
		}
		if w < 0 || w > MaxWeight {
			return fmt.Errorf("backend %q: %w: %d", name, ErrBadWeight, w)
		}
		backends[i].Weight = w
	}
	total := 0
	for _, b := range backends {
		total += b.Weight
	}
	if total == 0 {
		return ErrNoCapacity
	}
	next.Backends = backends
	return nil
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
