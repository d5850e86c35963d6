package control

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrNotAllowed is a backend whose host is outside a reader's allow-list.
// It is never a verdict of Apply: see Allow.
var ErrNotAllowed = errors.New("backend host not in BACKEND_ALLOW")

// Allow is the list of hosts a reader may connect to as backends
// (BACKEND_ALLOW): host names, IP addresses and CIDR prefixes.
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
// Matching: a name entry matches that name only (case-insensitive, no DNS
// lookup, so a name that later resolves elsewhere is still the name the
// operator allowed); an IP or CIDR entry matches addresses given as IPs.
// "*" allows every host.
type Allow struct {
	any      bool
	names    map[string]bool
	prefixes []netip.Prefix
	desc     string
}

// ParseAllow reads a BACKEND_ALLOW value: entries separated by commas or
// spaces. Empty allows the hosts of initial (the starting BACKENDS) and
// nothing else.
func ParseAllow(s string, initial []Backend) (*Allow, error) {
	a := &Allow{names: map[string]bool{}}
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(entries) == 0 {
		for _, b := range initial {
			h, err := AddrHost(b.Addr)
			if err != nil {
				return nil, fmt.Errorf("backend %q: %w", b.Name, err)
			}
			entries = append(entries, h)
		}
		a.desc = "the hosts of BACKENDS: "
	}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "*":
			a.any = true
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("BACKEND_ALLOW entry %q: not a CIDR prefix such as 10.0.0.0/8", e)
			}
			a.prefixes = append(a.prefixes, p.Masked())
		default:
			e = strings.TrimSuffix(strings.Trim(e, "[]"), ".")
			if ip, err := netip.ParseAddr(e); err == nil {
				a.prefixes = append(a.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if e == "" || strings.ContainsAny(e, ":@") {
				return nil, fmt.Errorf("BACKEND_ALLOW entry %q: want a host name, an IP address or a CIDR prefix", e)
			}
			a.names[e] = true
		}
	}
	a.desc += strings.Join(entries, ",")
	return a, nil
}

// Any reports whether every host is allowed ("*").
func (a *Allow) Any() bool { return a.any }

// String lists the entries, for logs.
func (a *Allow) String() string { return a.desc }

// Check returns nil if b's host is allowed, else an error wrapping
// ErrNotAllowed that names the backend (its address redacted).
func (a *Allow) Check(b Backend) error {
	if a == nil || a.any {
		return nil
	}
	h, err := AddrHost(b.Addr)
	if err != nil {
		return fmt.Errorf("backend %q: %w", b.Name, err)
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		ip = ip.Unmap().WithZone("")
		for _, p := range a.prefixes {
			if p.Contains(ip) {
				return nil
			}
		}
	} else if a.names[h] {
		return nil
	}
	return fmt.Errorf("backend %q at %s: %w (%s)", b.Name, RedactAddr(b.Addr), ErrNotAllowed, a.desc)
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
