// Package filter decides which TCP packets capture records. One Filter is
// applied twice: compiled to classic BPF for the kernel (so the socket only
// copies matching frames) and matched in user space on every decoded record
// (so files, and frames that a permissive kernel program lets through, give
// the same records).
//
// The filter comes from LISTEN_ADDR (`tcp and dst host H and dst port P`; a
// host of 0.0.0.0 or :: means any destination address) or from BPF_FILTER, a
// tcpdump expression in this subset:
//
//	expr      = primitive { ("and" | "&&") primitive }
//	primitive = proto [qualifier] | qualifier
//	proto     = "tcp" | "ip" | "ip6"
//	qualifier = ["src" | "dst"] ("host" ADDR | "net" CIDR | "port" N)
//
// ADDR is an IPv4 or IPv6 literal (no names), CIDR an address/prefix
// length, N a port number; "host" and "port" without src/dst match either
// direction, as in tcpdump. Examples: `tcp`, `dst port 80`,
// `tcp dst port 8080 and dst host ::1`, `src net 10.0.0.0/8 and port 443`.
// Every filter implies tcp: capture records TCP packets only. Anything else
// (or, not, parentheses, other protocols, names) is rejected with an error,
// never guessed at.
//
// No maintained pure-Go compiler of full tcpdump expressions exists; the one
// candidate (github.com/packetcap/go-pcap/filter) assumes plain Ethernet at
// fixed offsets (no VLAN tags, no IPv6 extension headers) and is small and
// little kept, so this package compiles the subset itself with
// golang.org/x/net/bpf.
package filter

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/record"
)

// ErrSyntax is wrapped by every error from Parse.
var ErrSyntax = errors.New("unsupported filter expression")

// Dir says which address or port of a packet a term looks at.
type Dir uint8

// Directions.
const (
	DirEither Dir = iota // src or dst
	DirSrc
	DirDst
)

func (d Dir) word() string {
	switch d {
	case DirSrc:
		return "src "
	case DirDst:
		return "dst "
	}
	return ""
}

type kind uint8

const (
	kindIPv4 kind = iota + 1 // "ip"
	kindIPv6                 // "ip6"
	kindNet                  // "host" or "net"
	kindPort                 // "port"
)

// term is one primitive; a Filter is their conjunction.
type term struct {
	kind   kind
	dir    Dir
	prefix netip.Prefix // kindNet
	port   uint16       // kindPort
}

// Filter is a conjunction of primitives over a TCP packet.
type Filter struct {
	terms []term
}

// FromListen builds the filter for a listen address "IP:port":
// `tcp and dst host IP and dst port P`, without the host when IP is 0.0.0.0
// or ::.
func FromListen(ap netip.AddrPort) *Filter {
	f := &Filter{}
	if a := ap.Addr(); !a.IsUnspecified() {
		a = a.Unmap().WithZone("")
		f.terms = append(f.terms, term{kind: kindNet, dir: DirDst, prefix: netip.PrefixFrom(a, a.BitLen())})
	}
	f.terms = append(f.terms, term{kind: kindPort, dir: DirDst, port: ap.Port()})
	return f
}

// ParseListen parses a listen address "IP:port" ("[v6]:port" for IPv6).
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want IP:port: %w", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("host %q is not an IP address", host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("port %q is not a number 1..65535", port)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// Parse parses a filter expression in the documented subset.
func Parse(expr string) (*Filter, error) {
	toks := strings.Fields(strings.ReplaceAll(expr, "&&", " && "))
	if len(toks) == 0 {
		return nil, fmt.Errorf("%w: empty expression (use \"tcp\" for every TCP packet)", ErrSyntax)
	}
	f := &Filter{}
	p := parser{toks: toks}
	for {
		if err := p.primitive(f); err != nil {
			return nil, err
		}
		if p.done() {
			return f, nil
		}
		if t := p.peek(); t != "and" && t != "&&" {
			return nil, p.errf("expected \"and\" before %q", t)
		}
		p.i++
		if p.done() {
			return nil, p.errf("expression ends after \"and\"")
		}
	}
}

type parser struct {
	toks []string
	i    int
}

func (p *parser) done() bool   { return p.i >= len(p.toks) }
func (p *parser) peek() string { return strings.ToLower(p.toks[p.i]) }

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("%w: %s (at word %d); supported: tcp, ip, ip6, [src|dst] host ADDR, [src|dst] net CIDR, [src|dst] port N, joined by \"and\"",
		ErrSyntax, fmt.Sprintf(format, args...), p.i+1)
}

func (p *parser) primitive(f *Filter) error {
	proto := false
	switch p.peek() {
	case "tcp":
		proto = true
		p.i++
	case "ip":
		f.terms = append(f.terms, term{kind: kindIPv4})
		proto = true
		p.i++
	case "ip6":
		f.terms = append(f.terms, term{kind: kindIPv6})
		proto = true
		p.i++
	}
	if p.done() {
		if proto {
			return nil
		}
		return p.errf("expression ends early")
	}
	dir := DirEither
	switch p.peek() {
	case "src":
		dir = DirSrc
		p.i++
	case "dst":
		dir = DirDst
		p.i++
	}
	if p.done() {
		return p.errf("expected host, net or port after %q", p.toks[p.i-1])
	}
	w := p.peek()
	switch w {
	case "host", "net", "port":
	default:
		if proto && dir == DirEither {
			return nil // a bare protocol, followed by "and" or the end
		}
		if w == "or" || w == "not" || w == "!" || w == "||" || strings.HasPrefix(w, "(") {
			return p.errf("%q is not supported (only \"and\")", p.toks[p.i])
		}
		return p.errf("%q is not supported", p.toks[p.i])
	}
	p.i++
	if p.done() {
		return p.errf("%s needs a value", w)
	}
	val := p.toks[p.i]
	p.i++
	switch w {
	case "host":
		a, err := netip.ParseAddr(val)
		if err != nil || a.Zone() != "" {
			return p.errf("host %q is not an IP address (names are not resolved)", val)
		}
		a = a.Unmap()
		f.terms = append(f.terms, term{kind: kindNet, dir: dir, prefix: netip.PrefixFrom(a, a.BitLen())})
	case "net":
		pre, err := netip.ParsePrefix(val)
		if err != nil {
			a, aerr := netip.ParseAddr(val)
			if aerr != nil {
				return p.errf("net %q is not an address/prefix-length", val)
			}
			pre = netip.PrefixFrom(a, a.BitLen())
		}
		f.terms = append(f.terms, term{kind: kindNet, dir: dir, prefix: pre.Masked()})
	case "port":
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil {
			return p.errf("port %q is not a number 0..65535", val)
		}
		f.terms = append(f.terms, term{kind: kindPort, dir: dir, port: uint16(n)})
	}
	return nil
}

// Match reports whether the decoded TCP packet r passes the filter.
func (f *Filter) Match(r *record.Record) bool {
	for i := range f.terms {
		t := &f.terms[i]
		var ok bool
		switch t.kind {
		case kindIPv4:
			ok = r.Dst.Is4()
		case kindIPv6:
			ok = r.Dst.Is6()
		case kindNet:
			switch t.dir {
			case DirSrc:
				ok = t.prefix.Contains(r.Src)
			case DirDst:
				ok = t.prefix.Contains(r.Dst)
			default:
				ok = t.prefix.Contains(r.Src) || t.prefix.Contains(r.Dst)
			}
		case kindPort:
			switch t.dir {
			case DirSrc:
				ok = r.SrcPort == t.port
			case DirDst:
				ok = r.DstPort == t.port
			default:
				ok = r.SrcPort == t.port || r.DstPort == t.port
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// String renders the filter as a tcpdump expression.
func (f *Filter) String() string {
	parts := []string{"tcp"}
	for _, t := range f.terms {
		switch t.kind {
		case kindIPv4:
			parts = append(parts, "ip")
		case kindIPv6:
			parts = append(parts, "ip6")
		case kindNet:
			if t.prefix.IsSingleIP() {
				parts = append(parts, t.dir.word()+"host "+t.prefix.Addr().String())
			} else {
				parts = append(parts, t.dir.word()+"net "+t.prefix.String())
			}
		case kindPort:
			parts = append(parts, t.dir.word()+"port "+strconv.Itoa(int(t.port)))
		}
	}
	return strings.Join(parts, " and ")
}
