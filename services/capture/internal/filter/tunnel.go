package filter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"golang.org/x/net/bpf"
)

// Tunnels is what the kernel program of mirror mode admits: tunnel
// packets to this host's addresses, over UDP to the ports of the UDP
// tunnels (VXLAN, Geneve) or over GRE (GRE and ERSPAN). The tunnel itself
// and the packet inside are checked in user space.
type Tunnels struct {
	// Hosts are the outer destination addresses admitted (empty: any).
	Hosts    []netip.Addr
	UDPPorts []uint16
	GRE      bool
}

const (
	ipProtoUDP = 17
	ipProtoGRE = 47
)

// String is the program's tcpdump equivalent.
func (t Tunnels) String() string {
	var alt []string
	for _, p := range t.UDPPorts {
		alt = append(alt, fmt.Sprintf("udp dst port %d", p))
	}
	if t.GRE {
		alt = append(alt, "proto gre")
	}
	s := "(" + strings.Join(alt, " or ") + ")"
	if len(t.Hosts) == 0 {
		return s
	}
	var hosts []string
	for _, h := range t.Hosts {
		hosts = append(hosts, "dst host "+h.String())
	}
	return s + " and (" + strings.Join(hosts, " or ") + ")"
}

// Program compiles t to classic BPF for frames of link type lt. IPv6
// packets with extension headers before the tunnel are passed to user
// space when their destination matches; later IPv4 fragments are dropped.
func (t Tunnels) Program(lt decode.LinkType, opt ProgramOptions) ([]bpf.Instruction, error) {
	if len(t.UDPPorts) == 0 && !t.GRE {
		return nil, fmt.Errorf("no tunnel to admit")
	}
	return program(lt, opt, t.ipv4, t.ipv6)
}

// hosts emits the check that the destination at off (4 or 16 bytes) is
// one of t's hosts of that family.
func (t Tunnels) hosts(a *asm, v6 bool, off uint32, reject int) {
	if len(t.Hosts) == 0 {
		return
	}
	ok := a.label()
	for _, h := range t.Hosts {
		h = h.Unmap()
		if h.Is6() != v6 {
			continue
		}
		if v6 {
			cmp6(a, term{prefix: netip.PrefixFrom(h, 128)}, off, ok, next)
			continue
		}
		a.emit(bpf.LoadAbsolute{Off: off, Size: 4})
		a.jeq(binary.BigEndian.Uint32(h.AsSlice()), ok, next)
	}
	a.ja(reject)
	a.mark(ok)
}

func (t Tunnels) ipv4(a *asm, base uint32, accept, reject int) {
	t.hosts(a, false, base+16, reject)
	a.emit(bpf.LoadAbsolute{Off: base + 6, Size: 2})
	a.jset(0x1fff, reject, next) // a later fragment has no tunnel header
	a.emit(bpf.LoadAbsolute{Off: base + 9, Size: 1})
	if t.GRE {
		a.jeq(ipProtoGRE, accept, next)
	}
	a.jeq(ipProtoUDP, next, reject)
	a.emit(bpf.LoadMemShift{Off: base}) // X = IPv4 header length
	a.emit(bpf.LoadIndirect{Off: base + 2, Size: 2})
	t.ports(a, accept, reject)
}

func (t Tunnels) ipv6(a *asm, base uint32, accept, reject int) {
	t.hosts(a, true, base+24, reject)
	udp := a.label()
	a.emit(bpf.LoadAbsolute{Off: base + 6, Size: 1})
	if t.GRE {
		a.jeq(ipProtoGRE, accept, next)
	}
	a.jeq(ipProtoUDP, udp, next)
	for _, nh := range []uint32{0, 43, 44, 51, 60} {
		a.jeq(nh, accept, next)
	}
	a.ja(reject)
	a.mark(udp)
	a.emit(bpf.LoadAbsolute{Off: base + 40 + 2, Size: 2})
	t.ports(a, accept, reject)
}

// ports jumps to accept when the loaded UDP destination port is one of
// t's, else to reject.
func (t Tunnels) ports(a *asm, accept, reject int) {
	for _, p := range t.UDPPorts {
		a.jeq(uint32(p), accept, next)
	}
	a.ja(reject)
}
