package control

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Mode is a routing mode: how a consumer splits records between the
// backends. The zero Mode ("") stands for "not given": a set_mode message
// without one keeps the mode, a table without one routes by ModeWeighted.
// Every fact about a mode is its row in Modes.
type Mode string

// Routing modes, each a row of Modes.
const (
	ModeWeighted Mode = "weighted"
	ModeHash     Mode = "hash"
)

// ModeInfo is one row of the table of routing modes.
type ModeInfo struct {
	Mode Mode `json:"name"`
	// Hashed: the mode routes by the hash of a key (HashKey), so a
	// table's hash key matters; without it the key matters only to a
	// sticky table.
	Hashed bool   `json:"hashed"`
	About  string `json:"about"`
}

// modes is the one table of routing modes; the first row is the default.
// A new mode is a row here and its case in routing.NewRoute.
var modes = []ModeInfo{
	{ModeWeighted, false, "exact proportions of the weights (smooth weighted round-robin)"},
	{ModeHash, true, "weighted consistent hashing of the hash key: one key, one instance"},
}

// Modes lists the routing modes, the default first.
func Modes() []ModeInfo { return append([]ModeInfo(nil), modes...) }

// ParseMode returns the mode named s; an unknown name is an ErrBadMode
// error listing the modes.
func ParseMode(s string) (Mode, error) {
	if _, ok := row(modes, Mode(s)); !ok {
		return "", fmt.Errorf("%w: mode %q (want %s)", ErrBadMode, s, oneOf(ModeNames()))
	}
	return Mode(s), nil
}

// ModeNames lists the names of the routing modes, the default first.
func ModeNames() []string { return names(modes) }

// String is the mode's name.
func (m Mode) String() string { return string(m) }

// Info is m's row of Modes; the zero Mode is the default's row.
func (m Mode) Info() ModeInfo {
	r, _ := row(modes, m)
	return r
}

// MarshalText encodes m as its name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m), nil }

// UnmarshalText accepts a mode's name, or "" for none given.
func (m *Mode) UnmarshalText(b []byte) error { return unmarshal(m, b, ParseMode) }

// HashKey names what of a record the hash modes (and a stick table) hash
// when the record carries no payload key. The zero HashKey ("") stands for
// "not given": KeySrc in a table. Every fact about a key is its row in
// HashKeys.
type HashKey string

// Hash keys, each a row of HashKeys.
const (
	KeySrc  HashKey = "src"
	KeyDst  HashKey = "dst"
	KeyPair HashKey = "pair"
	KeyFlow HashKey = "flow"
)

// Fields is a set of record fields a hash key hashes.
type Fields uint8

// Record fields a key may hash, in the order they are hashed.
const (
	FieldSrc   Fields = 1 << iota // source IP
	FieldDst                      // destination IP
	FieldPorts                    // source and destination port, and the protocol (TCP)
)

// fieldNames names each field, for the API.
var fieldNames = []struct {
	f    Fields
	name string
}{{FieldSrc, "src"}, {FieldDst, "dst"}, {FieldPorts, "ports"}}

// Names lists the fields of f by name, in hashing order.
func (f Fields) Names() []string {
	var out []string
	for _, n := range fieldNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// MarshalJSON encodes f as the list of its names.
func (f Fields) MarshalJSON() ([]byte, error) { return json.Marshal(f.Names()) }

// HashKeyInfo is one row of the table of hash keys.
type HashKeyInfo struct {
	Key    HashKey `json:"name"`
	Fields Fields  `json:"fields"` // what it hashes (package routing hashes these)
	About  string  `json:"about"`
}

// hashKeys is the one table of hash keys; the first row is the default.
var hashKeys = []HashKeyInfo{
	{KeySrc, FieldSrc, "source IP"},
	{KeyDst, FieldDst, "destination IP"},
	{KeyPair, FieldSrc | FieldDst, "source and destination IP"},
	{KeyFlow, FieldSrc | FieldDst | FieldPorts, "flow: both IPs and ports"},
}

// HashKeys lists the hash keys, the default first.
func HashKeys() []HashKeyInfo { return append([]HashKeyInfo(nil), hashKeys...) }

// HashKeyNames lists the names of the hash keys, the default first.
func HashKeyNames() []string { return names(hashKeys) }

// ParseHashKey returns the hash key named s; an unknown name is an
// ErrBadMode error listing the keys.
func ParseHashKey(s string) (HashKey, error) {
	if _, ok := row(hashKeys, HashKey(s)); !ok {
		return "", fmt.Errorf("%w: hash_key %q (want %s)", ErrBadMode, s, oneOf(HashKeyNames()))
	}
	return HashKey(s), nil
}

// String is the key's name.
func (k HashKey) String() string { return string(k) }

// Info is k's row of HashKeys; the zero HashKey is the default's row.
func (k HashKey) Info() HashKeyInfo {
	r, _ := row(hashKeys, k)
	return r
}

// MarshalText encodes k as its name.
func (k HashKey) MarshalText() ([]byte, error) { return []byte(k), nil }

// UnmarshalText accepts a hash key's name, or "" for none given.
func (k *HashKey) UnmarshalText(b []byte) error { return unmarshal(k, b, ParseHashKey) }

// name is the name of a table's row.
func (m ModeInfo) name() string    { return string(m.Mode) }
func (k HashKeyInfo) name() string { return string(k.Key) }

// row is the row of rows named v, or the first row (the default) and
// false when none is.
func row[R interface{ name() string }, T ~string](rows []R, v T) (R, bool) {
	for _, r := range rows {
		if r.name() == string(v) {
			return r, true
		}
	}
	return rows[0], false
}

// names lists the names of rows, in order.
func names[R interface{ name() string }](rows []R) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.name()
	}
	return out
}

// unmarshal sets *v to the value named b by parse, or to "" (none given)
// when b is empty.
func unmarshal[T ~string](v *T, b []byte, parse func(string) (T, error)) error {
	if len(b) == 0 {
		*v = ""
		return nil
	}
	p, err := parse(string(b))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// oneOf renders names as "a, b or c".
func oneOf(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
