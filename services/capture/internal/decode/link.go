package decode

import (
	"encoding/binary"
	"strconv"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket/layers"
)

// LinkType is a pcap LINKTYPE_ value. gopacket's layers.LinkType is one
// byte wide, too narrow for LINKTYPE_LINUX_SLL2 (276), so the decoder keeps
// its own type and takes the values gopacket names from it.
type LinkType uint32

// Link types the decoder understands: each has one row in links.
const (
	LinkNull     = LinkType(layers.LinkTypeNull)
	LinkEthernet = LinkType(layers.LinkTypeEthernet)
	LinkRaw      = LinkType(layers.LinkTypeRaw)
	LinkLoop     = LinkType(layers.LinkTypeLoop)
	LinkSLL      = LinkType(layers.LinkTypeLinuxSLL)
	LinkIPv4     = LinkType(layers.LinkTypeIPv4)
	LinkIPv6     = LinkType(layers.LinkTypeIPv6)
	// LinkNFLOG is LINKTYPE_NFLOG: Linux netfilter log messages (TLVs).
	LinkNFLOG LinkType = 239
	// LinkArcnetBSD is LINKTYPE_ARCNET_BSD: source and destination ids,
	// then the protocol id (RFC 1051 or RFC 1201 framing).
	LinkArcnetBSD LinkType = 7
	// LinkArcnetLinux is LINKTYPE_ARCNET_LINUX: as BSD, with a two-byte
	// offset field before the protocol id.
	LinkArcnetLinux LinkType = 129
	// LinkIPoIB is LINKTYPE_IPOIB: IP over InfiniBand, a 40-byte pseudo
	// header (the GRH) and the 4-byte IPoIB header before the packet.
	LinkIPoIB LinkType = 242
	// LinkSLL2 is Linux cooked capture v2.
	LinkSLL2 LinkType = 276
	// LinkRawDLT12 and LinkRawDLT14 are the DLT_RAW values that some
	// systems write in place of LINKTYPE_RAW (101).
	LinkRawDLT12 LinkType = 12
	LinkRawDLT14 LinkType = 14
	// LinkUnknown marks a frame whose link type could not be told.
	LinkUnknown LinkType = 0xffffffff
)

// Framing is where a kernel (classic BPF) program finds the IP header in
// a frame of a link type.
type Framing struct {
	// EtherTypeAt is the offset of the EtherType that says IPv4 or IPv6,
	// with 802.1Q/802.1ad tags allowed after it; -1 when the IP header
	// follows the link header directly and its version nibble says which.
	EtherTypeAt int
	// IPAt is the offset of the IP header (of an untagged frame).
	IPAt int
}

// Linux hardware types (ARPHRD_*, linux/if_arp.h) of interfaces whose
// AF_PACKET frames capture decodes.
const (
	arphrdEther    = 1
	arphrdLoopback = 772
	arphrdRawIP    = 519
	arphrdNone     = 0xfffe
)

// ethHeader is the length of an Ethernet header.
const ethHeader = 14

// linkDecoder decodes a frame from its first byte; the frame holds at
// least its link type's header length.
type linkDecoder func(frame []byte, cut int, r *record.Record, seg *out) Status

// link is one row of the link-type table.
type link struct {
	lt     LinkType
	name   string
	decode linkDecoder
	// header is the shortest frame the decoder reads: a shorter one is
	// StatusLinkTruncated.
	header int
	// framing is where a kernel program finds the IP header; nil where
	// no kernel program is compiled for the link type.
	framing *Framing
	// arphrd are the Linux hardware types whose AF_PACKET frames are of
	// this link type: live capture opens those interfaces.
	arphrd []uint16
}

// links is the link-type table, like gopacket's layers/enums.go: every
// fact about a link type the fast path decodes is in its row. They are
// Ethernet, Linux cooked capture (v1 and v2), BSD loopback, raw IP, Linux
// NFLOG, IP over InfiniBand and ARCnet (RFC 1051 and RFC 1201 framing, BSD
// and Linux headers). Adding one takes its constant above, its row here
// and its decoder below; a row with arphrd and framing is one live capture
// opens (source) and compiles a kernel program for (filter).
var links = [...]link{
	{lt: LinkEthernet, name: "Ethernet", decode: ethernet, header: ethHeader,
		framing: &Framing{EtherTypeAt: 12, IPAt: ethHeader}, arphrd: []uint16{arphrdEther, arphrdLoopback}},
	{lt: LinkSLL, name: "Linux SLL", decode: sll, header: 16, framing: &Framing{EtherTypeAt: 14, IPAt: 16}},
	{lt: LinkSLL2, name: "LinuxSLL2", decode: sll2, header: 20, framing: &Framing{EtherTypeAt: 0, IPAt: 20}},
	{lt: LinkNull, name: "Null", decode: null, header: 4},
	{lt: LinkLoop, name: "Loop", decode: loop, header: 4},
	{lt: LinkRaw, name: "Raw", decode: rawIP, framing: &rawFraming, arphrd: []uint16{arphrdNone, arphrdRawIP}},
	{lt: LinkRawDLT12, name: "Raw", decode: rawIP, framing: &rawFraming},
	{lt: LinkRawDLT14, name: "Raw", decode: rawIP, framing: &rawFraming},
	{lt: LinkIPv4, name: "IPv4", decode: ipv4},
	{lt: LinkIPv6, name: "IPv6", decode: ipv6},
	{lt: LinkNFLOG, name: "NFLOG", decode: nflog, header: 4},
	{lt: LinkIPoIB, name: "IPoIB", decode: ipoib, header: ipoibHeaderAt + 4},
	{lt: LinkArcnetBSD, name: "ArcnetBSD", decode: arcnetBSD, header: arcnetBSDProto + 1},
	{lt: LinkArcnetLinux, name: "ArcnetLinux", decode: arcnetLinux, header: arcnetLinuxProto + 1},
}

// rawFraming is a frame that starts with the IP header.
var rawFraming = Framing{EtherTypeAt: -1}

// linkIndex finds a row of links by link type: one more than its index,
// 0 for a link type without a row. LINKTYPE_ values stay far below its
// size (TestLinkTable checks every row is found).
var linkIndex = func() (idx [512]uint8) {
	for i, l := range links {
		if int(l.lt) < len(idx) {
			idx[l.lt] = uint8(i + 1)
		}
	}
	return idx
}()

// lookup is the row of link type lt, or nil.
func lookup(lt LinkType) *link {
	if lt >= LinkType(len(linkIndex)) {
		return nil
	}
	if i := linkIndex[lt]; i > 0 {
		return &links[i-1]
	}
	return nil
}

// Supported reports whether frames of link type lt can be decoded.
func Supported(lt LinkType) bool { return lookup(lt) != nil }

// String names the link type.
func (lt LinkType) String() string {
	if l := lookup(lt); l != nil {
		return l.name
	}
	if lt <= 0xff {
		return layers.LinkType(lt).String()
	}
	return "LinkType(" + strconv.FormatUint(uint64(lt), 10) + ")"
}

// Framing is where a kernel program finds the IP header in frames of lt;
// false where none is compiled for lt.
func (lt LinkType) Framing() (Framing, bool) {
	if l := lookup(lt); l != nil && l.framing != nil {
		return *l.framing, true
	}
	return Framing{}, false
}

// LinkOfARPHRD is the link type of the AF_PACKET frames of an interface
// of Linux hardware type t (ARPHRD_*); false when capture does not decode
// them.
func LinkOfARPHRD(t uint16) (LinkType, bool) {
	for _, l := range links {
		for _, a := range l.arphrd {
			if a == t {
				return l.lt, true
			}
		}
	}
	return LinkUnknown, false
}

// LiveLinks names the link types live capture opens interfaces of, for an
// error message.
func LiveLinks() []LinkType {
	var out []LinkType
	for _, l := range links {
		if len(l.arphrd) > 0 {
			out = append(out, l.lt)
		}
	}
	return out
}

const (
	// Linux cooked headers: the largest protocol number that is not an
	// EtherType, the two of them that can carry IP, and the hardware
	// type of netlink sockets.
	maxLinuxProto     = 1536
	linuxProto8022    = 4
	linuxProtoPPPHDLC = 7
	arphrdNetlink     = 824

	// NFLOG attribute types and address families.
	nflogPacketHdr = 1
	nflogPayload   = 9
	nfprotoIPv4    = 2
	nfprotoIPv6    = 10

	// ARCnet protocol ids (RFC 1051, RFC 1201, RFC 2497), and where the
	// protocol id is in a BSD and a Linux header.
	arcIP1051        = 0xf0
	arcARP1051       = 0xf1
	arcIP1201        = 0xd4
	arcIPv6          = 0xc4
	arcDiagnose      = 0x80
	arcBACnet        = 0xcd
	arcException     = 0xff
	arcnetBSDProto   = 2
	arcnetLinuxProto = 4

	// ipoibHeaderAt is where the IPoIB header follows the GRH.
	ipoibHeaderAt = 40
)

// The decoders of the table's rows. Each takes the frame from its first
// byte, at least the row's header length long.

// ethernet decodes an Ethernet frame: untagged IPv4 first, as most of
// the traffic is.
func ethernet(frame []byte, cut int, r *record.Record, seg *out) Status {
	et := binary.BigEndian.Uint16(frame[12:])
	switch {
	case et == etherTypeIPv4:
		return ipv4(frame[ethHeader:], cut, r, seg)
	case et <= maxLength8023:
		// Cisco ISL frames have an 802.3 length and a destination
		// of 01-00-0C-00-00 (or 0C-00-0C-00-00); tshark reads them
		// as ISL, not LLC.
		if (frame[0] == 0x01 || frame[0] == 0x0c) && frame[1] == 0 && frame[2] == 0x0c && frame[3] == 0 && frame[4] == 0 {
			return StatusNotIP
		}
		return ieee8023(et, frame[ethHeader:], cut, r, seg)
	}
	return ether(et, frame[ethHeader:], cut, r, seg)
}

// sll decodes Linux cooked capture v1: hardware type at 2, protocol at 14.
func sll(frame []byte, cut int, r *record.Record, seg *out) Status {
	return cooked(binary.BigEndian.Uint16(frame[2:]), binary.BigEndian.Uint16(frame[14:]), frame[16:], cut, r, seg)
}

// sll2 decodes Linux cooked capture v2: protocol at 0, hardware type at 8.
func sll2(frame []byte, cut int, r *record.Record, seg *out) Status {
	return cooked(binary.BigEndian.Uint16(frame[8:]), binary.BigEndian.Uint16(frame[0:]), frame[20:], cut, r, seg)
}

// null decodes BSD loopback: PPP's address and control bytes, or the
// family in the byte order of the machine that captured, read as tshark
// does: the order that leaves the upper half zero, and a value above an
// 802.3 length is an EtherType.
func null(frame []byte, cut int, r *record.Record, seg *out) Status {
	if frame[0] == 0xff && frame[1] == 0x03 {
		return ppp(frame[2:], cut, r, seg)
	}
	fam := binary.LittleEndian.Uint32(frame)
	if fam&0xffff0000 != 0 {
		fam = binary.BigEndian.Uint32(frame)
	}
	switch {
	case fam == 2:
		return ipv4(frame[4:], cut, r, seg)
	case fam == 24 || fam == 28 || fam == 30: // AF_INET6 on the BSDs, FreeBSD and Darwin
		return ipv6(frame[4:], cut, r, seg)
	case fam > maxLength8023 && fam <= 0xffff:
		return ether(uint16(fam), frame[4:], cut, r, seg)
	}
	return StatusNotIP
}

// loop decodes OpenBSD loopback: the family is big-endian, whatever
// machine captured.
func loop(frame []byte, cut int, r *record.Record, seg *out) Status {
	switch binary.BigEndian.Uint32(frame) {
	case 2:
		return ipv4(frame[4:], cut, r, seg)
	case 24, 28, 30:
		return ipv6(frame[4:], cut, r, seg)
	}
	return StatusNotIP
}

// ipoib decodes IP over InfiniBand: the GRH, then an EtherType and two
// reserved bytes.
func ipoib(frame []byte, cut int, r *record.Record, seg *out) Status {
	switch binary.BigEndian.Uint16(frame[ipoibHeaderAt:]) {
	case etherTypeIPv4:
		return ipv4(frame[ipoibHeaderAt+4:], cut, r, seg)
	case etherTypeIPv6:
		return ipv6(frame[ipoibHeaderAt+4:], cut, r, seg)
	}
	return StatusNotIP
}

func arcnetBSD(frame []byte, cut int, r *record.Record, seg *out) Status {
	return arcnet(frame, arcnetBSDProto, true, cut, r, seg)
}

func arcnetLinux(frame []byte, cut int, r *record.Record, seg *out) Status {
	return arcnet(frame, arcnetLinuxProto, false, cut, r, seg)
}

// rawIP decodes LINKTYPE_RAW: an IP packet, or, as tshark reads it, PPP
// in HDLC framing (0xff 0x03) at the start or after the 6-byte fake address
// of Linux's ISDN PPP interfaces.
func rawIP(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 1 {
		return StatusIPTruncated
	}
	if len(b) >= 2 && b[0] == 0xff && b[1] == 0x03 {
		return ppp(b[2:], cut, r, seg)
	}
	if len(b) >= 8 && b[6] == 0xff && b[7] == 0x03 {
		return ppp(b[8:], cut, r, seg)
	}
	switch b[0] >> 4 {
	case 4:
		return ipv4(b, cut, r, seg)
	case 6:
		return ipv6(b, cut, r, seg)
	}
	return StatusNotIP
}

// cooked dispatches on the protocol of a Linux cooked header: an
// EtherType, or up to 1536 one of Linux's own protocol numbers, of which
// 802.2 LLC and PPP in HDLC framing can carry IP. A netlink socket's
// messages (hardware type ARPHRD_NETLINK) are not packets.
func cooked(hatype, proto uint16, b []byte, cut int, r *record.Record, seg *out) Status {
	switch {
	case hatype == arphrdNetlink:
		return StatusNotIP
	case proto > maxLinuxProto:
		return ether(proto, b, cut, r, seg)
	case proto == linuxProto8022:
		return llc(b, cut, r, seg)
	case proto == linuxProtoPPPHDLC:
		// Address and control (0xff 0x03) unless compressed away.
		if len(b) >= 1 && b[0] == 0xff {
			if len(b) < 2 {
				return StatusLinkTruncated
			}
			b = b[2:]
		}
		return ppp(b, cut, r, seg)
	}
	return StatusNotIP
}

// nflog decodes a Linux NFLOG message: family, version and resource id,
// then TLVs (length and type in the capturing host's byte order, taken as
// little-endian; each padded to 4 bytes). The payload TLV holds the packet;
// its protocol is the hardware protocol of the packet header TLV (an
// EtherType) when there is one, else the family.
func nflog(b []byte, cut int, r *record.Record, seg *out) Status {
	wire := len(b) + cut
	var (
		hw      uint16
		payload []byte
		pcut    int
		found   bool
	)
	for off := 4; wire-off >= 4; {
		if len(b) < off+4 {
			return StatusLinkTruncated
		}
		n := int(binary.LittleEndian.Uint16(b[off:]))
		typ := binary.LittleEndian.Uint16(b[off+2:]) & 0x7fff
		if n < 4 {
			return StatusLinkBadHeader
		}
		switch typ {
		case nflogPacketHdr:
			if n == 8 {
				if len(b) < off+6 {
					return StatusLinkTruncated
				}
				hw = binary.BigEndian.Uint16(b[off+4:])
			}
		case nflogPayload:
			if off+n > wire {
				return StatusLinkBadHeader
			}
			payload, pcut, found = b[off+4:min(off+n, len(b))], off+n-min(off+n, len(b)), true
		}
		off += (n + 3) &^ 3
	}
	switch {
	case !found:
		return StatusNotIP
	case hw != 0:
		return ether(hw, payload, pcut, r, seg)
	case b[0] == nfprotoIPv4:
		return ipv4(payload, pcut, r, seg)
	case b[0] == nfprotoIPv6:
		return ipv6(payload, pcut, r, seg)
	}
	return StatusNotIP
}

// arcnet decodes an ARCnet frame whose protocol id is at b[at]. RFC 1201
// framing (every protocol but the RFC 1051 ones, diagnostics and BACnet)
// adds a split flag and a sequence number; in BSD headers a split flag of
// 0xff marks an exception frame, with padding, the protocol id again and
// the real split flag.
func arcnet(b []byte, at int, exceptions bool, cut int, r *record.Record, seg *out) Status {
	proto := b[at]
	off := at + 1
	switch proto {
	case arcIP1051, arcARP1051, arcDiagnose, arcBACnet:
	default:
		if len(b) < off+1 {
			return StatusLinkTruncated
		}
		if exceptions && b[off] == arcException {
			off += 4
		}
		off += 3
	}
	if len(b) < off {
		return StatusLinkTruncated
	}
	switch proto {
	case arcIP1051, arcIP1201:
		return ipv4(b[off:], cut, r, seg)
	case arcIPv6:
		return ipv6(b[off:], cut, r, seg)
	}
	return StatusNotIP
}
