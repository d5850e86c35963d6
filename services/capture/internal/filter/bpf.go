package filter

import (
	"encoding/binary"
	"fmt"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"golang.org/x/net/bpf"
)

// ProgramOptions tune the kernel program.
type ProgramOptions struct {
	// Snaplen is how many bytes of a matching frame the kernel keeps.
	Snaplen uint32
	// SkipOutgoing drops frames the host sends (PACKET_OUTGOING). On a
	// loopback interface every packet is seen twice, once leaving and once
	// arriving; this keeps the arriving copy only.
	SkipOutgoing bool
}

const (
	packetOutgoing = 4 // PACKET_OUTGOING, the packet type of a frame the host sends

	ipProtoTCP = 6
)

// Program compiles f to classic BPF for frames of link type lt, which finds
// the IP header where lt's framing (decode.LinkType.Framing) says. The
// program is exact for IPv4 and for IPv6 without extension headers; an IPv6
// packet with extension headers, or a frame with more than two VLAN tags, is
// passed to user space (where Match decides) when its addresses match. Later
// IPv4 fragments are dropped.
func (f *Filter) Program(lt decode.LinkType, opt ProgramOptions) ([]bpf.Instruction, error) {
	return program(lt, opt, f.ipv4, f.ipv6)
}

// program is a kernel program for frames of link type lt that finds the
// IP header (after up to two VLAN tags where an EtherType says which IP)
// and leaves the decision to v4 or v6, called with the header's offset;
// each ends in a jump.
func program(lt decode.LinkType, opt ProgramOptions, v4, v6 func(a *asm, base uint32, accept, reject int)) ([]bpf.Instruction, error) {
	fr, ok := lt.Framing()
	if !ok {
		return nil, fmt.Errorf("no kernel program for link type %v", lt)
	}
	a := &asm{}
	accept, reject := a.label(), a.label()
	if opt.SkipOutgoing {
		a.emit(bpf.LoadExtension{Num: bpf.ExtType})
		a.jeq(packetOutgoing, reject, next)
	}
	ip := uint32(fr.IPAt)
	if fr.EtherTypeAt < 0 {
		l4, l6 := a.label(), a.label()
		a.emit(bpf.LoadAbsolute{Off: ip, Size: 1})
		a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
		a.jeq(0x40, l4, next)
		a.jeq(0x60, l6, reject)
		a.mark(l4)
		v4(a, ip, accept, reject)
		a.mark(l6)
		v6(a, ip, accept, reject)
	} else {
		// Up to two tags are decoded; deeper stacks go to user space.
		// A tag's EtherType follows its 2-byte TCI.
		l4 := [3]int{a.label(), a.label(), a.label()}
		l6 := [3]int{a.label(), a.label(), a.label()}
		for depth := range 3 {
			off := uint32(fr.EtherTypeAt)
			if depth > 0 {
				off = ip + uint32(4*depth) - 2
			}
			a.emit(bpf.LoadAbsolute{Off: off, Size: 2})
			a.jeq(0x0800, l4[depth], next)
			a.jeq(0x86dd, l6[depth], next)
			if depth == 2 {
				a.jeq(0x8100, accept, next)
				a.jeq(0x88a8, accept, next)
				a.jeq(0x9100, accept, reject)
				break
			}
			tag := a.label()
			a.jeq(0x8100, tag, next)
			a.jeq(0x88a8, tag, next)
			a.jeq(0x9100, tag, reject)
			a.mark(tag)
		}
		for depth := range 3 {
			base := ip + uint32(4*depth)
			a.mark(l4[depth])
			v4(a, base, accept, reject)
			a.mark(l6[depth])
			v6(a, base, accept, reject)
		}
	}
	a.mark(accept)
	a.emit(bpf.RetConstant{Val: opt.Snaplen})
	a.mark(reject)
	a.emit(bpf.RetConstant{Val: 0})
	return a.finish()
}

// ipv4 emits the checks of an IPv4 header at base; it ends in a jump.
func (f *Filter) ipv4(a *asm, base uint32, accept, reject int) {
	a.emit(bpf.LoadAbsolute{Off: base + 9, Size: 1})
	a.jeq(ipProtoTCP, next, reject)
	a.emit(bpf.LoadAbsolute{Off: base + 6, Size: 2})
	a.jset(0x1fff, reject, next) // a later fragment has no TCP header
	ports := false
	for _, t := range f.terms {
		switch t.kind {
		case kindIPv6:
			a.ja(reject)
			return
		case kindNet:
			if !t.prefix.Addr().Is4() {
				a.ja(reject)
				return
			}
			addr := binary.BigEndian.Uint32(t.prefix.Addr().AsSlice())
			mask := ^uint32(0) << (32 - t.prefix.Bits())
			if t.prefix.Bits() == 0 {
				mask = 0
			}
			cmp := func(off uint32, t, f int) {
				a.emit(bpf.LoadAbsolute{Off: off, Size: 4})
				if mask != ^uint32(0) {
					a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask})
				}
				a.jeq(addr, t, f)
			}
			switch t.dir {
			case DirSrc:
				cmp(base+12, next, reject)
			case DirDst:
				cmp(base+16, next, reject)
			default:
				ok := a.label()
				cmp(base+12, ok, next)
				cmp(base+16, next, reject)
				a.mark(ok)
			}
		case kindPort:
			ports = true
		}
	}
	if ports {
		a.emit(bpf.LoadMemShift{Off: base}) // X = IPv4 header length
		for _, t := range f.terms {
			if t.kind == kindPort {
				portCheck(a, t, func(off uint32) bpf.Instruction {
					return bpf.LoadIndirect{Off: base + off, Size: 2}
				}, reject)
			}
		}
	}
	a.ja(accept)
}

// ipv6 emits the checks of an IPv6 header at base; it ends in a jump.
func (f *Filter) ipv6(a *asm, base uint32, accept, reject int) {
	for _, t := range f.terms {
		switch t.kind {
		case kindIPv4:
			a.ja(reject)
			return
		case kindNet:
			if !t.prefix.Addr().Is6() {
				a.ja(reject)
				return
			}
			switch t.dir {
			case DirSrc:
				cmp6(a, t, base+8, next, reject)
			case DirDst:
				cmp6(a, t, base+24, next, reject)
			default:
				ok, try := a.label(), a.label()
				cmp6(a, t, base+8, ok, try)
				a.mark(try)
				cmp6(a, t, base+24, next, reject)
				a.mark(ok)
			}
		}
	}
	tcp := a.label()
	a.emit(bpf.LoadAbsolute{Off: base + 6, Size: 1})
	a.jeq(ipProtoTCP, tcp, next)
	// Extension headers: user space walks them.
	for _, nh := range []uint32{0, 43, 44, 51, 60} {
		a.jeq(nh, accept, next)
	}
	a.ja(reject)
	a.mark(tcp)
	for _, t := range f.terms {
		if t.kind == kindPort {
			portCheck(a, t, func(off uint32) bpf.Instruction {
				return bpf.LoadAbsolute{Off: base + 40 + off, Size: 2}
			}, reject)
		}
	}
	a.ja(accept)
}

// cmp6 compares the 16-byte address at off with t's prefix, jumping to
// match or to fail (next falls through).
func cmp6(a *asm, t term, off uint32, match, fail int) {
	addr := t.prefix.Addr().As16()
	bits := t.prefix.Bits()
	for w := 0; w < 4 && bits > 0; w++ {
		mask := ^uint32(0)
		if bits < 32 {
			mask = ^uint32(0) << (32 - bits)
		}
		bits -= 32
		a.emit(bpf.LoadAbsolute{Off: off + uint32(4*w), Size: 4})
		if mask != ^uint32(0) {
			a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask})
		}
		a.jeq(binary.BigEndian.Uint32(addr[4*w:])&mask, next, fail)
	}
	if match != next {
		a.ja(match)
	}
}

func portCheck(a *asm, t term, load func(off uint32) bpf.Instruction, reject int) {
	p := uint32(t.port)
	switch t.dir {
	case DirSrc:
		a.emit(load(0))
		a.jeq(p, next, reject)
	case DirDst:
		a.emit(load(2))
		a.jeq(p, next, reject)
	default:
		ok := a.label()
		a.emit(load(0))
		a.jeq(p, ok, next)
		a.emit(load(2))
		a.jeq(p, next, reject)
		a.mark(ok)
	}
}

// next as a jump target means the following instruction.
const next = -1

// asm assembles classic BPF with symbolic, forward-only jump targets.
type asm struct {
	ins  []bpf.Instruction
	refs []ref
	pos  []int
}

type ref struct {
	at     int
	jt, jf int // labels or next; jf unused for an unconditional jump
	uncond bool
}

func (a *asm) label() int              { a.pos = append(a.pos, -1); return len(a.pos) - 1 }
func (a *asm) mark(l int)              { a.pos[l] = len(a.ins) }
func (a *asm) emit(i bpf.Instruction)  { a.ins = append(a.ins, i) }
func (a *asm) jeq(v uint32, t, f int)  { a.cond(bpf.JumpEqual, v, t, f) }
func (a *asm) jset(v uint32, t, f int) { a.cond(bpf.JumpBitsSet, v, t, f) }

func (a *asm) cond(c bpf.JumpTest, v uint32, t, f int) {
	a.refs = append(a.refs, ref{at: len(a.ins), jt: t, jf: f})
	a.ins = append(a.ins, bpf.JumpIf{Cond: c, Val: v})
}

func (a *asm) ja(l int) {
	a.refs = append(a.refs, ref{at: len(a.ins), jt: l, uncond: true})
	a.ins = append(a.ins, bpf.Jump{})
}

func (a *asm) finish() ([]bpf.Instruction, error) {
	skip := func(at, l int) (int, error) {
		if l == next {
			return 0, nil
		}
		if a.pos[l] < 0 {
			return 0, fmt.Errorf("bpf: label %d never placed", l)
		}
		d := a.pos[l] - at - 1
		if d < 0 {
			return 0, fmt.Errorf("bpf: backward jump at %d", at)
		}
		return d, nil
	}
	for _, r := range a.refs {
		st, err := skip(r.at, r.jt)
		if err != nil {
			return nil, err
		}
		if r.uncond {
			a.ins[r.at] = bpf.Jump{Skip: uint32(st)}
			continue
		}
		sf, err := skip(r.at, r.jf)
		if err != nil {
			return nil, err
		}
		if st > 255 || sf > 255 {
			return nil, fmt.Errorf("bpf: filter too long (a jump of %d instructions)", max(st, sf))
		}
		j := a.ins[r.at].(bpf.JumpIf)
		j.SkipTrue, j.SkipFalse = uint8(st), uint8(sf)
		a.ins[r.at] = j
	}
	if len(a.ins) > 4096 {
		return nil, fmt.Errorf("bpf: filter too long (%d instructions)", len(a.ins))
	}
	return a.ins, nil
}
