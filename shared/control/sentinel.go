package control

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/redact"
)

// A backend may also be a primary that Redis Sentinel watches:
//
//	sentinel://[user[:password]@]host1[:port],host2[:port],…/mastername[?options]
//	sentinels://…   the same over TLS, to the sentinels and to the primary
//
// The hosts are the sentinels (port 26379 when left out); mastername is
// the name they know the primary by. The user and password, if any, are
// the sentinels' login. Options:
//
//	db=N                     the database on the primary (0)
//	sentinel_credential=NAME the sentinels' login, by its name in
//	                         REDIS_CREDENTIALS (never written in the log)
//
// The primary's login is that of any backend: its credential by name, or
// the reader's own REDIS_USERNAME/REDIS_PASSWORD where those serve.

// DefaultSentinelPort is the port of a sentinel that names none.
const DefaultSentinelPort = 26379

// SentinelAddr is a sentinel:// or sentinels:// address taken apart.
type SentinelAddr struct {
	TLS        bool
	Sentinels  []string // host:port of each sentinel
	Master     string
	DB         int
	Username   string // the sentinels' login from the address
	Password   string
	Credential string // sentinel_credential: the sentinels' login by name
}

// IsSentinel reports whether addr is a sentinel:// or sentinels://
// address.
func IsSentinel(addr string) bool {
	return strings.HasPrefix(addr, "sentinel://") || strings.HasPrefix(addr, "sentinels://")
}

// ParseSentinel takes a sentinel:// or sentinels:// address apart. Its
// errors never show a password.
func ParseSentinel(addr string) (SentinelAddr, error) {
	var s SentinelAddr
	shown := redact.Addr(addr)
	bad := func(why string) error { return fmt.Errorf("%w: addr %s: %s", ErrBadBackend, shown, why) }
	scheme, rest, _ := strings.Cut(addr, "://")
	s.TLS = scheme == "sentinels"
	rest, query, _ := strings.Cut(rest, "?")
	hosts, master, ok := strings.Cut(rest, "/")
	if !ok || master == "" || strings.Contains(master, "/") {
		return s, bad("want sentinel://host1:port,host2:port/mastername")
	}
	if CheckName(master) != nil {
		return s, bad(fmt.Sprintf("master name %q: want 1 to %d letters, digits, '.', '_' or '-'", master, MaxNameLen))
	}
	s.Master = master
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		user, pass, hasPass := strings.Cut(hosts[:i], ":")
		var err error
		if s.Username, err = url.PathUnescape(user); err == nil && hasPass {
			s.Password, err = url.PathUnescape(pass)
		}
		if err != nil {
			return s, bad("bad escape in the login")
		}
		hosts = hosts[i+1:]
	}
	for _, h := range strings.Split(hosts, ",") {
		hp, err := sentinelHost(h)
		if err != nil {
			return s, bad(err.Error())
		}
		s.Sentinels = append(s.Sentinels, hp)
	}
	if len(s.Sentinels) > MaxSentinels {
		return s, bad(fmt.Sprintf("%d sentinels, at most %d", len(s.Sentinels), MaxSentinels))
	}
	return s, s.parseQuery(query, bad)
}

// MaxSentinels bounds the sentinels of one address.
const MaxSentinels = 16

// sentinelHost checks one sentinel's host[:port] and returns host:port.
func sentinelHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("an empty sentinel host")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: the default, unless it is a bare IPv6 address.
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), strconv.Itoa(DefaultSentinelPort)
		if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && !strings.HasPrefix(h, "[")) {
			return "", fmt.Errorf("sentinel %q: want host:port", h)
		}
	}
	if host == "" || strings.ContainsAny(host, "/@?#") {
		return "", fmt.Errorf("sentinel %q: no host", h)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("sentinel %q: port must be 1..65535", h)
	}
	return net.JoinHostPort(host, port), nil
}

func (s *SentinelAddr) parseQuery(query string, bad func(string) error) error {
	q, err := url.ParseQuery(query)
	if err != nil {
		return bad("bad query")
	}
	for k, v := range q {
		if len(v) != 1 {
			return bad(fmt.Sprintf("option %s given %d times", k, len(v)))
		}
		switch k {
		case "db":
			if s.DB, err = strconv.Atoi(v[0]); err != nil || s.DB < 0 {
				return bad("db must be a database number such as 0")
			}
		case "sentinel_credential":
			if CheckName(v[0]) != nil {
				return bad(fmt.Sprintf("sentinel_credential %q: want a name of REDIS_CREDENTIALS", v[0]))
			}
			s.Credential = v[0]
		default:
			return bad(fmt.Sprintf("unknown option %q (db, sentinel_credential)", k))
		}
	}
	return nil
}

// HostPorts lists the host and port of every server addr names: the
// instance, or each sentinel of a sentinel address.
func HostPorts(addr string) ([]string, error) {
	if IsSentinel(addr) {
		s, err := ParseSentinel(addr)
		return s.Sentinels, err
	}
	h, p, err := AddrHostPort(addr)
	if err != nil {
		return nil, err
	}
	return []string{net.JoinHostPort(h, strconv.Itoa(p))}, nil
}
