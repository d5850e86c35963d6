package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

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
	StateUp         State = iota // in rotation
	StateOOM                     // at maxmemory: refuses writes
	StateReadonly                // a replica: refuses writes
	StateLoading                 // reading its dataset at start
	StateMasterDown              // a replica that lost its primary
	StateAuth                    // credentials refused
	StateDown                    // unreachable, a timeout, anything else
	StateDraining                // admin: weight 0, still answering
	StateEjected                 // admin: not answering its PING
	StateNotAllowed              // admin: outside BACKEND_ALLOW, never dialled
	numStates
)

// Tone is how a page shows a state: up, out (out of rotation), drain
// (taking no new records by choice) or wait (out for a while, expected
// back on its own).
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
	// that put a backend in this state.
	codes []string
	// config: the error is a configuration error that no retry mends.
	config bool
	// admin: a state only admin sees, never a consumer.
	admin bool
	doc   string
}

var states = [numStates]stateRow{
	StateUp:         {"up", ToneUp, nil, false, false, "in rotation"},
	StateOOM:        {"oom", ToneOut, []string{"OOM"}, false, false, "Redis is at maxmemory and refuses writes"},
	StateReadonly:   {"readonly", ToneOut, []string{"READONLY"}, false, false, "a replica, which refuses writes"},
	StateLoading:    {"loading", ToneOut, []string{"LOADING"}, false, false, "reading its dataset at start"},
	StateMasterDown: {"masterdown", ToneOut, []string{"MASTERDOWN"}, false, false, "a replica that lost its primary"},
	StateAuth:       {"auth", ToneOut, []string{"NOAUTH", "WRONGPASS", "NOPERM", "ERR AUTH", "ERR invalid password"}, true, false, "its login was refused or its TLS certificate is not trusted"},
	StateDown:       {"down", ToneOut, nil, false, false, "unreachable, a timeout or any other error"},
	StateDraining:   {"draining", ToneDrain, nil, false, true, "weight 0, still answering"},
	StateEjected:    {"ejected", ToneOut, nil, false, true, "not answering admin's PING"},
	StateNotAllowed: {"not_allowed", ToneOut, nil, true, true, "outside BACKEND_ALLOW: never dialled, sent nothing"},
}

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
		for _, code := range r.codes {
			if hasCode(err, code) {
				return State(i)
			}
		}
	}
	return StateDown
}

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
