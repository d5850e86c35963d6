package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/redis/go-redis/v9"
)

// State is the state of a Redis backend: in rotation, or out of it and
// why. Consumers report it in their heartbeats; admin adds the states it
// sees itself (draining, ejected, not_allowed). It encodes as its name.
//
// Every fact about a state is its row of the states table below: its
// name, how the page shows it, the Redis error codes that put a backend in
// it, and whether it is a configuration error. Adding a state is one
// constant and one row.
type State uint8

// The states. The order is the table's; the zero value is StateUp.
const (
	StateUp           State = iota // in rotation
	StateOOM                       // at maxmemory: refuses writes
	StateReadonly                  // a replica: refuses writes
	StateLoading                   // reading its dataset at start
	StateMasterDown                // a replica that lost its primary
	StateAuth                      // credentials refused
	StateUnreplicated              // too few replicas confirmed a write
	StateFailover                  // a sentinel backend between primaries
	StateDown                      // unreachable, a timeout, anything else
	StateDraining                  // admin: weight 0, still answering
	StateEjected                   // admin: not answering its PING
	StateNotAllowed                // admin: outside BACKEND_ALLOW, never dialled
	numStates
)

// Tone is how a page shows a state: up, out (out of rotation), drain
// (taking no new records by choice) or wait (its records wait for it to
// come back on its own).
type Tone string

// The tones.
const (
	ToneUp    Tone = "up"
	ToneOut   Tone = "out"
	ToneDrain Tone = "drain"
	ToneWait  Tone = "wait"
)

type stateRow struct {
	name string
	tone Tone
	// codes are the Redis error codes (the first word of an error reply)
	// that put a backend in this state; err, an error of this process's
	// that does.
	codes []string
	err   error
	// config: the error is a configuration error that no retry mends.
	config bool
	// failover: on a sentinel backend, what a failover looks like (the
	// demoted primary's READONLY, the promoted replica's LOADING, a reset
	// connection, a new primary without its replicas yet), so the backend
	// is in StateFailover for up to a bounded wait instead.
	failover bool
	// admin: a state only admin sees, never a consumer.
	admin bool
	doc   string
}

var states = [numStates]stateRow{
	StateUp:         {name: "up", tone: ToneUp, doc: "in rotation"},
	StateOOM:        {name: "oom", tone: ToneOut, codes: []string{"OOM"}, doc: "Redis is at maxmemory and refuses writes"},
	StateReadonly:   {name: "readonly", tone: ToneOut, codes: []string{"READONLY"}, failover: true, doc: "a replica, which refuses writes"},
	StateLoading:    {name: "loading", tone: ToneOut, codes: []string{"LOADING"}, failover: true, doc: "reading its dataset at start"},
	StateMasterDown: {name: "masterdown", tone: ToneOut, codes: []string{"MASTERDOWN"}, failover: true, doc: "a replica that lost its primary"},
	StateAuth: {name: "auth", tone: ToneOut, codes: []string{"NOAUTH", "WRONGPASS", "NOPERM", "ERR AUTH", "ERR invalid password"}, config: true,
		doc: "its login was refused or its TLS certificate is not trusted"},
	StateUnreplicated: {name: "unreplicated", tone: ToneOut, err: ErrNotReplicated, failover: true,
		doc: "fewer replicas than REDIS_MIN_REPLICAS confirmed a write in time"},
	StateFailover: {name: "failover", tone: ToneWait,
		doc: "a sentinel backend between primaries: its records wait, up to REDIS_FAILOVER_WAIT"},
	StateDown:       {name: "down", tone: ToneOut, failover: true, doc: "unreachable, a timeout or any other error"},
	StateDraining:   {name: "draining", tone: ToneDrain, admin: true, doc: "weight 0, still answering"},
	StateEjected:    {name: "ejected", tone: ToneOut, admin: true, doc: "not answering admin's PING"},
	StateNotAllowed: {name: "not_allowed", tone: ToneOut, config: true, admin: true, doc: "outside BACKEND_ALLOW: never dialled, sent nothing"},
}

// ErrNotReplicated is a write that fewer replicas than asked for
// confirmed in time (WAIT).
var ErrNotReplicated = errors.New("too few replicas confirmed the write")

// States lists every state, in table order.
func States() []State {
	out := make([]State, numStates)
	for i := range out {
		out[i] = State(i)
	}
	return out
}

// ConsumerStates lists the states a consumer reports, in table order.
func ConsumerStates() []State {
	var out []State
	for i, r := range states {
		if !r.admin {
			out = append(out, State(i))
		}
	}
	return out
}

// String is the state's name.
func (s State) String() string {
	if s >= numStates {
		return fmt.Sprintf("state(%d)", uint8(s))
	}
	return states[s].name
}

// Tone is how a page shows s.
func (s State) Tone() Tone {
	if s >= numStates {
		return ToneOut
	}
	return states[s].tone
}

// Doc says what s means, for the page and the API.
func (s State) Doc() string {
	if s >= numStates {
		return ""
	}
	return states[s].doc
}

// ErrUnknownState is a state name not in the table.
var ErrUnknownState = errors.New("unknown backend state")

// ParseState returns the state named name.
func ParseState(name string) (State, error) {
	for i, r := range states {
		if r.name == name {
			return State(i), nil
		}
	}
	return StateDown, fmt.Errorf("%w %q", ErrUnknownState, name)
}

// MarshalText encodes s as its name.
func (s State) MarshalText() ([]byte, error) {
	if s >= numStates {
		return nil, fmt.Errorf("%w: %d", ErrUnknownState, uint8(s))
	}
	return []byte(states[s].name), nil
}

// UnmarshalText decodes a state's name. A name this build does not know
// (a newer consumer's, during a rolling upgrade) reads as StateDown: the
// backend is out of rotation for a reason this reader cannot name, and
// the reason that comes with it says which.
func (s *State) UnmarshalText(b []byte) error {
	st, err := ParseState(string(b))
	if err != nil && len(b) == 0 {
		return err
	}
	*s = st
	return nil
}

// Classify names the state a Redis error puts a backend in: the row whose
// code the error carries, StateDown for anything else. It is the one place
// Redis error codes are read.
func Classify(err error) State {
	if err == nil {
		return StateUp
	}
	if isUntrusted(err) {
		return StateAuth
	}
	for i, r := range states {
		if r.err != nil && errors.Is(err, r.err) {
			return State(i)
		}
		for _, code := range r.codes {
			if hasCode(err, code) {
				return State(i)
			}
		}
	}
	return StateDown
}

// ClassifySentinel is Classify for a sentinel backend: what a failover
// looks like is StateFailover, unless no sentinel answers or the primary
// they name is outside BACKEND_ALLOW (then the backend is down).
func ClassifySentinel(err error) State {
	st := Classify(err)
	if !states[st].failover || errors.Is(err, control.ErrNotAllowed) || strings.Contains(err.Error(), sentinelsUnreachable) {
		return st
	}
	return StateFailover
}

// sentinelsUnreachable is go-redis's error when no sentinel answers.
const sentinelsUnreachable = "all sentinels specified in configuration are unreachable"

// hasCode reports whether err is a Redis error reply with code: the
// reply's first word, or, for a script's error, which carries the
// command's error after its own words, a word anywhere in the reply.
func hasCode(err error, code string) bool {
	if redis.HasErrorPrefix(err, code) {
		return true
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.Contains(rerr.Error(), code+" ") {
		return true
	}
	// A failed AUTH during the connection handshake comes wrapped.
	msg := err.Error()
	return strings.HasPrefix(msg, code) || strings.Contains(msg, ": "+code)
}

// isUntrusted reports whether err is a TLS certificate that is not
// trusted.
func isUntrusted(err error) bool {
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	var verr *tls.CertificateVerificationError
	return errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr) || errors.As(err, &verr)
}

// IsConfigError reports whether err (from a command such as PING) means the
// backend is misconfigured rather than down: its login was refused or its
// TLS certificate is not trusted (a state whose row says config).
func IsConfigError(err error) bool {
	return err != nil && states[Classify(err)].config
}
