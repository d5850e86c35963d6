// Package operators is the list of people and programs allowed to use
// admin's API, each by name with a role, so that every change in the
// control log says who made it.
//
// ADMIN_TOKENS lists operators as name:role:hash items separated by commas;
// ADMIN_TOKENS_FILE names a file with one item per line ('#' starts a
// comment). role is read (weights, status, stats, records, history) or
// write (those and every change). hash is the SHA-256 of the token in hex
// (`printf %s "$TOKEN" | sha256sum`): the token itself is written nowhere.
// The file is read again when its modification time changes, so an
// operator is added or revoked without a restart. Replace it whole (write
// a new file, then rename it over the old one): a file caught half written
// may be read as it is, revoking whom it does not list yet. ADMIN_TOKEN stays a
// write operator named "admin", and ADMIN_READ_TOKEN a read operator named
// "reader".
package operators

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
)

// Role is what an operator may do.
type Role int

// The roles, weakest first.
const (
	RoleRead Role = iota + 1
	RoleWrite
)

var roleNames = map[Role]string{RoleRead: "read", RoleWrite: "write"}

func (r Role) String() string { return roleNames[r] }

// ParseRole reads "read" or "write".
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if s == name {
			return r, nil
		}
	}
	return 0, fmt.Errorf("role %q: want read or write", s)
}

// Operator is one entry of the list.
type Operator struct {
	Name string
	Role Role
	hash [sha256.Size]byte
}

// Names of the operators that ADMIN_TOKEN and ADMIN_READ_TOKEN stand for.
const (
	AdminName  = "admin"
	ReaderName = "reader"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ErrBadList wraps every error in a list.
var ErrBadList = errors.New("bad operator list")

// Parse reads items "name:role:sha256hex" separated by commas or new
// lines; '#' starts a comment. Names are unique.
func Parse(s string) ([]Operator, error) {
	var out []Operator
	seen := map[string]bool{}
	for n, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, item := range strings.Split(line, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			op, err := parseItem(item)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: %w", ErrBadList, n+1, err)
			}
			if seen[op.Name] {
				return nil, fmt.Errorf("%w: operator %q listed twice", ErrBadList, op.Name)
			}
			seen[op.Name] = true
			out = append(out, op)
		}
	}
	return out, nil
}

func parseItem(item string) (Operator, error) {
	parts := strings.Split(item, ":")
	if len(parts) != 3 {
		return Operator{}, fmt.Errorf("item %.20q…: want name:role:sha256-hex-of-the-token", item)
	}
	name, role, hexHash := parts[0], parts[1], strings.ToLower(parts[2])
	if !validName.MatchString(name) {
		return Operator{}, fmt.Errorf("name %q: letters, digits and . _ @ - only, at most 64", name)
	}
	r, err := ParseRole(role)
	if err != nil {
		return Operator{}, fmt.Errorf("operator %s: %w", name, err)
	}
	op := Operator{Name: name, Role: r}
	if b, err := hex.DecodeString(hexHash); err != nil || len(b) != sha256.Size {
		return Operator{}, fmt.Errorf("operator %s: the hash must be 64 hex digits (sha256 of the token), not the token itself", name)
	} else {
		copy(op.hash[:], b)
	}
	return op, nil
}

// HashToken is the hash an operator list holds for token: SHA-256, in hex,
// as `printf %s "$TOKEN" | sha256sum` prints it.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// FromToken is an operator for a token given in clear (ADMIN_TOKEN,
// ADMIN_READ_TOKEN).
func FromToken(name string, role Role, token string) Operator {
	return Operator{Name: name, Role: role, hash: sha256.Sum256([]byte(token))}
}

// List is the operators in force, swapped whole when the file changes.
type List struct {
	fixed []Operator // from the environment
	file  string
	ops   atomic.Pointer[[]Operator]
	mtime time.Time
	size  int64
	log   *slog.Logger
}

// New returns the list of fixed (ADMIN_TOKEN, ADMIN_READ_TOKEN,
// ADMIN_TOKENS) and, when file is not empty, the operators of file, read
// now: a file that cannot be read or parsed is an error.
func New(fixed []Operator, file string, log *slog.Logger) (*List, error) {
	l := &List{fixed: fixed, file: file, log: log}
	if err := l.load(); err != nil {
		return nil, err
	}
	return l, nil
}

// load reads the file (if any) and swaps the list in.
func (l *List) load() error {
	all := append([]Operator(nil), l.fixed...)
	if l.file != "" {
		st, err := os.Stat(l.file)
		if err != nil {
			return fmt.Errorf("ADMIN_TOKENS_FILE: %w", err)
		}
		b, err := os.ReadFile(l.file)
		if err != nil {
			return fmt.Errorf("ADMIN_TOKENS_FILE: %w", err)
		}
		ops, err := Parse(string(b))
		if err != nil {
			return fmt.Errorf("ADMIN_TOKENS_FILE %s: %w", l.file, err)
		}
		l.mtime, l.size = st.ModTime(), st.Size()
		all = append(all, ops...)
	}
	seen := map[string]bool{}
	for _, op := range all {
		if seen[op.Name] {
			return fmt.Errorf("%w: operator %q listed twice (ADMIN_TOKEN is %q, ADMIN_READ_TOKEN %q)", ErrBadList, op.Name, AdminName, ReaderName)
		}
		seen[op.Name] = true
	}
	l.ops.Store(&all)
	return nil
}

// Len is the number of operators in force.
func (l *List) Len() int { return len(*l.ops.Load()) }

// HasWriter reports whether some operator may write.
func (l *List) HasWriter() bool {
	for _, op := range *l.ops.Load() {
		if op.Role == RoleWrite {
			return true
		}
	}
	return false
}

// Lookup returns the operator whose token is token. Every entry is
// compared, in constant time, whichever matches.
func (l *List) Lookup(token string) (Operator, bool) {
	sum := sha256.Sum256([]byte(token))
	var found Operator
	match := 0
	for _, op := range *l.ops.Load() {
		if subtle.ConstantTimeCompare(sum[:], op.hash[:]) == 1 {
			found, match = op, 1
		}
	}
	return found, match == 1
}

// Watch reads the file again whenever its modification time or size
// changes, every interval, until ctx ends. A file that no longer parses
// leaves the list in force and is logged.
func (l *List) Watch(ctx context.Context, interval time.Duration) {
	if l.file == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(l.file)
		if err != nil {
			l.log.Warn("operators file unreadable, keeping the list in force", "file", l.file, "err", err)
			continue
		}
		if st.ModTime().Equal(l.mtime) && st.Size() == l.size {
			continue
		}
		if err := l.load(); err != nil {
			l.log.Warn("operators file changed but does not parse, keeping the list in force", "file", l.file, "err", err)
			l.mtime, l.size = st.ModTime(), st.Size() // warn once per change
			continue
		}
		l.log.Info("operators reloaded", "file", l.file, "operators", l.Len())
	}
}
