// Package redisconn turns a backend address into go-redis options: plain
// host:port, or a redis:// or rediss:// URL with an ACL user or password,
// a database and, for rediss://, TLS verified against REDIS_CA_FILE (see
// control.CheckAddr for the forms). It also tells a refused login or an
// untrusted certificate — a configuration error that no retry mends —
// from an instance that is down.
//
// A process's own login (REDIS_USERNAME, REDIS_PASSWORD) is presented only
// to the addresses it was started with (BACKENDS), never to one that
// arrives later through the control log: an operator, or anyone who can
// write the log, cannot point the process at a listener of theirs and read
// its password off the wire.
package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/redis/go-redis/v9"
)

// Credentials are what this process presents to every backend. The ACL
// user and password (REDIS_USERNAME, REDIS_PASSWORD) serve each backend
// whose address names no password of its own, so a process logs in as
// itself (consumers may write, admin only read) and no password has to be
// written into the control log. CA, when not nil, is the only authority
// trusted for rediss:// (REDIS_CA_FILE); nil trusts the system's roots.
type Credentials struct {
	Username, Password string
	CA                 *x509.CertPool
	// Named are the logins a backend may name as its credential
	// (REDIS_CREDENTIALS, see ParseNamed).
	Named map[string]Login
	// Home is where Username and Password may be sent: the scheme class
	// and host:port of each starting backend (see homeKey). nil sends
	// them everywhere (tests); LoadCredentials always sets it.
	Home map[string]bool
	// Allow is where a sentinel backend's client may connect
	// (BACKEND_ALLOW): its sentinels and the primary they name. nil
	// allows every address.
	Allow *control.Allow
}

// LoadCredentials reads the CA file (see LoadCA), checks that a user comes
// with a password, and keeps the login for the addresses of home (the
// starting BACKENDS).
func LoadCredentials(caFile, username, password string, home []control.Backend) (Credentials, error) {
	if username != "" && password == "" {
		return Credentials{}, fmt.Errorf("REDIS_USERNAME=%s: REDIS_PASSWORD is not set", username)
	}
	ca, err := LoadCA(caFile)
	c := Credentials{Username: username, Password: password, CA: ca, Home: map[string]bool{}}
	for _, b := range home {
		if k, ok := homeKey(b.Addr); ok {
			c.Home[k] = true
		}
	}
	return c, err
}

// Login is an ACL user (empty: the default user) and its password.
type Login struct{ Username, Password string }

// ParseNamed reads REDIS_CREDENTIALS: NAME=USER:PASSWORD items separated
// by commas (NAME=:PASSWORD for the default user). envconfig cannot hold
// such a map, so it is parsed here. Errors never show a password.
func ParseNamed(s string) (map[string]Login, error) {
	out := map[string]Login{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, login, ok := strings.Cut(item, "=")
		user, pass, ok2 := strings.Cut(login, ":")
		if !ok || !ok2 || pass == "" {
			return nil, fmt.Errorf("REDIS_CREDENTIALS item %d: want NAME=USER:PASSWORD", len(out)+1)
		}
		if err := control.CheckName(name); err != nil {
			return nil, fmt.Errorf("REDIS_CREDENTIALS: %w", err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("REDIS_CREDENTIALS: %q listed twice", name)
		}
		out[name] = Login{Username: user, Password: pass}
	}
	return out, nil
}

// ErrUnknownCredential is a backend naming a credential this process was
// not given.
var ErrUnknownCredential = errors.New("credential not in REDIS_CREDENTIALS")

// OptionsFor returns the options for b: Options for its address (or, for
// a sentinel address, the sentinels' and the primary's), logging in to the
// instance with the login its Credential names when it names one.
func OptionsFor(b control.Backend, c Credentials) (ClientOptions, error) {
	var o ClientOptions
	var err error
	if control.IsSentinel(b.Addr) {
		o, err = sentinelOptions(b, c)
	} else {
		o.Options, err = Options(b.Addr, c)
	}
	if err != nil || b.Credential == "" {
		return o, err
	}
	login, ok := c.Named[b.Credential]
	if !ok {
		return ClientOptions{}, fmt.Errorf("backend %q: %w: %q", b.Name, ErrUnknownCredential, b.Credential)
	}
	o.Username, o.Password = login.Username, login.Password
	return o, nil
}

// Serves reports whether c's own login may be sent to addr.
func (c Credentials) Serves(addr string) bool {
	if c.Home == nil {
		return true
	}
	k, ok := homeKey(addr)
	return ok && c.Home[k]
}

// homeKey is addr as Home knows it: "tls " or "plain ", then host:port
// (lower-case host, port 6379 when a URL names none). A password never
// goes in clear to where it was configured to go over TLS.
func homeKey(addr string) (string, bool) {
	if control.IsSentinel(addr) {
		return sentinelHomeKey(addr)
	}
	h, port, err := control.AddrHostPort(addr)
	if err != nil {
		return "", false
	}
	class := "plain "
	if strings.HasPrefix(addr, "rediss://") {
		class = "tls "
	}
	return class + net.JoinHostPort(strings.ToLower(h), strconv.Itoa(port)), true
}

// Options returns the options for addr, logging in with c unless addr
// carries a password itself or is not one of c.Home. Errors never show a
// password.
func Options(addr string, c Credentials) (*redis.Options, error) {
	if err := control.CheckAddr(addr); err != nil {
		return nil, err
	}
	if control.IsSentinel(addr) {
		return nil, fmt.Errorf("%w: addr %s: a sentinel address has no single instance (OptionsFor)", control.ErrBadBackend, redact.Addr(addr))
	}
	o := &redis.Options{Addr: addr}
	if control.IsURL(addr) {
		var err error
		if o, err = redis.ParseURL(addr); err != nil {
			// ParseURL's errors may quote the URL.
			return nil, fmt.Errorf("%w: addr %s: not a redis URL", control.ErrBadBackend, redact.Addr(addr))
		}
	}
	if o.Password == "" && c.Serves(addr) {
		o.Username, o.Password = c.Username, c.Password
	}
	if o.TLSConfig != nil {
		o.TLSConfig.RootCAs = c.CA
		if o.TLSConfig.MinVersion < tls.VersionTLS12 {
			o.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	return o, nil
}

// LoadCA reads PEM certificates from file (REDIS_CA_FILE); "" gives nil,
// the system's roots.
func LoadCA(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("REDIS_CA_FILE=%s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("REDIS_CA_FILE=%s: no PEM certificate in it", file)
	}
	return pool, nil
}
