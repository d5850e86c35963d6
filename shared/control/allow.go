package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/redact"
)

// ErrNotAllowed is a backend whose host and port are outside a reader's
// allow-list.
// It is never a verdict of Apply: see Allow.
var ErrNotAllowed = errors.New("backend address not in BACKEND_ALLOW")

// Allow is the list of addresses a reader may connect to as backends
// (BACKEND_ALLOW): host names, IP addresses and CIDR prefixes, each with a
// port or "*" for any port.
//
// It is a reader's own policy, not part of the fold. Apply must reach the
// same table on every reader, but readers may be given different lists
// (admin and consumers, or consumers mid-rollout); a refusal inside the
// fold would then split their tables and versions, and the changes after
// it would apply to different tables. So the change is folded alike
// everywhere, and each reader filters the table it connects by
// (Allow.Filter): a backend outside its list is never dialled, gets no
// records, and its refusal is counted and logged by the reader.
//
// Entries:
//
//	redis-c:6379  10.0.0.7:6380  [fd00::7]:6379   that host, that port
//	10.0.0.0/8:6379  [fd00::/64]:6379             any IP of the prefix, that port
//	redis-c:*  10.0.0.0/8:*                       any port
//	redis-c  10.0.0.0/8                           any port, as host:*
//	*                                             any host, any port
//
// A name entry matches that name only (case-insensitive, no DNS lookup, so
// a name that later resolves elsewhere is still the name the operator
// allowed); an IP or CIDR entry matches addresses given as IPs. A backend
// address without a port (redis://host) is at 6379.
type Allow struct {
	any   bool
	rules []allowRule
	desc  string
}

// allowRule is one entry: a name or a prefix, and a port (0: any).
type allowRule struct {
	name   string
	prefix netip.Prefix
	port   int
}

// ParseAllow reads a BACKEND_ALLOW value: entries separated by commas or
// spaces. Empty allows exactly the host:port pairs of initial (the
// starting BACKENDS) and nothing else.
func ParseAllow(s string, initial []Backend) (*Allow, error) {
	a := &Allow{}
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(entries) == 0 {
		for _, b := range initial {
			hps, err := HostPorts(b.Addr)
			if err != nil {
				return nil, fmt.Errorf("backend %q: %w", b.Name, err)
			}
			entries = append(entries, hps...)
		}
		a.desc = "the host:port pairs of BACKENDS: "
	}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "*" {
			a.any = true
			continue
		}
		r, err := parseAllowEntry(e)
		if err != nil {
			return nil, err
		}
		a.rules = append(a.rules, r)
	}
	a.desc += strings.Join(entries, ",")
	return a, nil
}

// parseAllowEntry reads one entry other than "*".
func parseAllowEntry(e string) (allowRule, error) {
	bad := fmt.Errorf("BACKEND_ALLOW entry %q: want host:port, CIDR:port or IP:port (port * for any), such as redis-c:6379, 10.0.0.0/8:6379 or [fd00::7]:*", e)
	host, port := e, ""
	switch {
	case strings.HasPrefix(e, "["):
		i := strings.Index(e, "]")
		if i < 0 {
			return allowRule{}, bad
		}
		host, port = e[1:i], e[i+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return allowRule{}, bad
		}
		port = strings.TrimPrefix(port, ":")
	case strings.Count(e, ":") == 1:
		host, port, _ = strings.Cut(e, ":")
	}
	var r allowRule
	if port != "" && port != "*" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return allowRule{}, bad
		}
		r.port = p
	}
	host = strings.TrimSuffix(host, ".")
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return allowRule{}, fmt.Errorf("BACKEND_ALLOW entry %q: not a CIDR prefix such as 10.0.0.0/8", e)
		}
		r.prefix = p.Masked()
		return r, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		r.prefix = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		return r, nil
	}
	if host == "" || strings.ContainsAny(host, ":@/") {
		return allowRule{}, bad
	}
	r.name = host
	return r, nil
}

// Any reports whether every host is allowed ("*").
func (a *Allow) Any() bool { return a.any }

// String lists the entries, for logs.
func (a *Allow) String() string { return a.desc }

// Check returns nil if b's host and port (each sentinel's, for a sentinel
// address) are allowed, else an error wrapping ErrNotAllowed that names
// the backend (its address redacted).
func (a *Allow) Check(b Backend) error {
	if a == nil || a.any {
		return nil
	}
	hps, err := HostPorts(b.Addr)
	if err != nil {
		return fmt.Errorf("backend %q: %w", b.Name, err)
	}
	for _, hp := range hps {
		if !a.Allows(hp) {
			return fmt.Errorf("backend %q at %s: %w (%s)", b.Name, redact.Addr(b.Addr), ErrNotAllowed, a.desc)
		}
	}
	return nil
}

// Allows reports whether a connection to hostport (host:port) is
// allowed: the check a client makes before it dials a primary that a
// sentinel named.
func (a *Allow) Allows(hostport string) bool {
	if a == nil || a.any {
		return true
	}
	h, p, err := net.SplitHostPort(hostport)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		return false
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	ip, ipErr := netip.ParseAddr(h)
	if ipErr == nil {
		ip = ip.Unmap().WithZone("")
	}
	for _, r := range a.rules {
		if r.port != 0 && r.port != port {
			continue
		}
		if r.name != "" && r.name == h || r.name == "" && ipErr == nil && r.prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// Filter returns t without the backends a does not allow (t itself when
// it allows them all), and the backends it left out.
func (a *Allow) Filter(t *Table) (*Table, []Backend) {
	var out []Backend
	for _, b := range t.Backends {
		if a.Check(b) != nil {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return t, nil
	}
	c := *t
	c.Backends = make([]Backend, 0, len(t.Backends)-len(out))
	for _, b := range t.Backends {
		if a.Check(b) == nil {
			c.Backends = append(c.Backends, b)
		}
	}
	return &c, out
}
