package control

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/redact"
)

// Backend addresses take two forms:
//
//	host:port                                   plain TCP, no password
//	redis://[user[:password]@]host[:port][/db]  the same, with an ACL user or
//	                                            password and a database (port 6379
//	                                            and db 0 when left out)
//	rediss://[user[:password]@]host[:port][/db] over TLS
//
// or a Sentinel-managed primary (sentinel://…, see ParseSentinel).
// Passwords are never shown: logs, answers and Describe use redact.Addr.

// CheckAddr reports whether addr is a backend address of any form.
func CheckAddr(addr string) error {
	if IsSentinel(addr) {
		_, err := ParseSentinel(addr)
		return err
	}
	_, err := AddrHost(addr)
	return err
}

// IsURL reports whether addr is a redis:// or rediss:// URL rather than
// host:port.
func IsURL(addr string) bool {
	return strings.HasPrefix(addr, "redis://") || strings.HasPrefix(addr, "rediss://")
}

// AddrHost checks addr and returns its host (a name or an IP address,
// without brackets).
func AddrHost(addr string) (string, error) {
	if !IsURL(addr) {
		if strings.Contains(addr, "://") {
			return "", fmt.Errorf("%w: addr %s: want host:port, redis://…, rediss://… or sentinel://…", ErrBadBackend, redact.Addr(addr))
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return "", fmt.Errorf("%w: addr %q: want host:port", ErrBadBackend, redact.Addr(addr))
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "", fmt.Errorf("%w: addr %q: port must be 1..65535", ErrBadBackend, redact.Addr(addr))
		}
		return host, nil
	}
	u, err := url.Parse(addr)
	if err != nil {
		// url's error quotes the whole address, password included.
		return "", fmt.Errorf("%w: addr %s: not a valid URL", ErrBadBackend, redact.Addr(addr))
	}
	shown := u.Redacted()
	if u.Hostname() == "" {
		return "", fmt.Errorf("%w: addr %s: no host", ErrBadBackend, shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%w: addr %s: port must be 1..65535", ErrBadBackend, shown)
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return "", fmt.Errorf("%w: addr %s: the path must be a database number such as /0", ErrBadBackend, shown)
		}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: addr %s: no query or fragment allowed", ErrBadBackend, shown)
	}
	return u.Hostname(), nil
}

// HasPassword reports whether addr is a URL that carries a password.
func HasPassword(addr string) bool {
	if !IsURL(addr) {
		return false
	}
	u, err := url.Parse(addr)
	if err != nil {
		return strings.Contains(addr, "@") // unparsable: assume the worst
	}
	_, ok := u.User.Password()
	return ok
}

// DefaultPort is the port of a redis:// or rediss:// address that names
// none.
const DefaultPort = 6379

// AddrHostPort checks addr and returns its host (without brackets) and
// port (DefaultPort when a URL names none).
func AddrHostPort(addr string) (string, int, error) {
	host, err := AddrHost(addr)
	if err != nil {
		return "", 0, err
	}
	var port string
	if IsURL(addr) {
		u, _ := url.Parse(addr) // AddrHost parsed it
		port = u.Port()
	} else {
		_, port, _ = net.SplitHostPort(addr)
	}
	if port == "" {
		return host, DefaultPort, nil
	}
	p, _ := strconv.Atoi(port) // AddrHost checked it
	return host, p, nil
}

// Redacted is a copy of t with every backend address redacted, for
// answers and logs.
func (t *Table) Redacted() *Table {
	c := *t
	c.Backends = make([]Backend, len(t.Backends))
	for i, b := range t.Backends {
		b.Addr = redact.Addr(b.Addr)
		c.Backends[i] = b
	}
	return &c
}
