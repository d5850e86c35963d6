// Package decode turns one captured frame into a connpipe record: the
// addresses of its first IP layer, the TCP ports and flags, and the IP length.
//
// A frame gives a record when the first network layer after the link layer
// is IPv4 or IPv6 and carries TCP directly; IPv6 extension headers
// (hop-by-hop, routing, destination options, fragment, AH) may sit between.
// The link layers are Ethernet (with 802.1Q/QinQ tags, MPLS label stacks,
// PPPoE sessions, 802.3 with LLC or LLC/SNAP, 802.1ah I-tags), Linux cooked
// capture (v1 and v2), BSD loopback, raw IP, Linux NFLOG, IP over
// InfiniBand and ARCnet (RFC 1051 and RFC 1201 framing, BSD and Linux
// headers). TCP inside a tunnel (GRE, IP-in-IP, UDP encapsulations, an MPLS
// pseudowire) or quoted in an ICMP error is not a TCP packet sent to a port,
// and neither is a non-first IP fragment: those give StatusNotTCP,
// StatusNotIP or StatusFragment (a Decoder in mirror mode opens the
// tunnels it is given, see Tunnels). A frame whose headers are cut or
// inconsistent gives one of the malformed statuses; a TCP header is needed
// only up to its flags (20 bytes), so a packet cut by the snapshot length
// after the TCP header is still recorded.
//
// What counts, and the IP length recorded, follow tshark 4.0 (the reference
// the sample captures' truth comes from), including for lengths that
// segmentation offload leaves in the header:
//   - an IPv4 total length of 0 (TSO/GSO, big TCP, captured on the sender)
//     is taken as the length of the frame after the link header, on the
//     wire (not just the captured part) and no longer than the link
//     layer's own length field (802.3, PPPoE, an NFLOG payload TLV) says;
//   - an IPv4 total length or IPv6 payload length larger than the frame is
//     recorded as it is;
//   - an IPv6 payload length of 0 with a jumbo payload option in a
//     hop-by-hop header (a jumbogram, RFC 2675, or IPv6 big TCP) takes its
//     length from the option; tshark 4.0 dissects nothing after such a
//     header, capture does. Without the option it is counted as
//     StatusIPv6ZeroLength.
//
// The recorded ip_len is 32 bits wide: IPv4 big TCP and jumbograms keep
// their real length (ipLen).
//
// A Decoder adds two things to the fast path: tunnels (mirror mode, see
// Tunnels), and gopacket's decoders for link types the fast path does not
// know (see fallback).
//
// The decoder is written by hand over the bytes: it is several times faster
// than gopacket's DecodingLayerParser with preallocated layers on the same
// frames and does not allocate (see BenchmarkDecode and
// BenchmarkDecodeGopacket). gopacket supplies the link-type and protocol
// numbers.
package decode

import (
	"encoding/binary"
	"net/netip"
	"strconv"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket/layers"
)

// Status is the outcome of decoding one frame.
type Status uint8

// Outcomes. StatusOK gives a record; StatusNotIP, StatusNotTCP and
// StatusFragment are well-formed frames that are not TCP packets; the rest
// are malformed frames.
const (
	StatusOK Status = iota
	StatusNotIP
	StatusNotTCP
	StatusFragment
	// StatusTunnelUnknownID: a tunnel frame of a VNI or ERSPAN session
	// that is not accepted (mirror mode).
	StatusTunnelUnknownID

	StatusUnsupportedLink
	StatusLinkTruncated
	StatusIPTruncated
	StatusIPBadHeader
	StatusIPv6ExtTruncated
	StatusTCPTruncated
	StatusTCPBadOffset
	StatusLinkBadHeader
	StatusIPv6ZeroLength
	// StatusTunnelMalformed: a tunnel header (mirror mode) cut short or
	// inconsistent.
	StatusTunnelMalformed

	NumStatus
)

var statusNames = [NumStatus]string{
	StatusOK:               "ok",
	StatusNotIP:            "not_ip",
	StatusNotTCP:           "not_tcp",
	StatusFragment:         "fragment",
	StatusTunnelUnknownID:  "tunnel_unknown_id",
	StatusUnsupportedLink:  "unsupported_link",
	StatusLinkTruncated:    "link_truncated",
	StatusIPTruncated:      "ip_truncated",
	StatusIPBadHeader:      "ip_bad_header",
	StatusIPv6ExtTruncated: "ipv6_ext_truncated",
	StatusTCPTruncated:     "tcp_truncated",
	StatusTCPBadOffset:     "tcp_bad_offset",
	StatusLinkBadHeader:    "link_bad_header",
	StatusIPv6ZeroLength:   "ipv6_zero_length",
	StatusTunnelMalformed:  "tunnel_malformed",
}

// String is the status's metric label.
func (s Status) String() string {
	if s < NumStatus {
		return statusNames[s]
	}
	return "unknown"
}

// Malformed reports whether s counts as a decode error (as opposed to a
// well-formed frame that simply is not TCP).
func (s Status) Malformed() bool { return s >= StatusUnsupportedLink && s < NumStatus }

// MalformedStatuses lists the statuses that are decode errors, for metrics.
func MalformedStatuses() []Status {
	var out []Status
	for s := StatusUnsupportedLink; s < NumStatus; s++ {
		out = append(out, s)
	}
	return out
}

// LinkType is a pcap LINKTYPE_ value. gopacket's layers.LinkType is one
// byte wide, too narrow for LINKTYPE_LINUX_SLL2 (276), so the decoder keeps
// its own type and takes the values gopacket names from it.
type LinkType uint32

// Link types the decoder understands.
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

// Supported reports whether frames of link type lt can be decoded.
func Supported(lt LinkType) bool {
	switch lt {
	case LinkEthernet, LinkSLL, LinkSLL2, LinkNull, LinkLoop,
		LinkRaw, LinkRawDLT12, LinkRawDLT14, LinkIPv4, LinkIPv6,
		LinkNFLOG, LinkArcnetBSD, LinkArcnetLinux, LinkIPoIB:
		return true
	}
	return false
}

// String names the link type.
func (lt LinkType) String() string {
	switch lt {
	case LinkSLL2:
		return "LinuxSLL2"
	case LinkRawDLT12, LinkRawDLT14:
		return "Raw"
	case LinkArcnetBSD:
		return "ArcnetBSD"
	case LinkArcnetLinux:
		return "ArcnetLinux"
	case LinkIPoIB:
		return "IPoIB"
	}
	if lt <= 0xff {
		return layers.LinkType(lt).String()
	}
	return "LinkType(" + strconv.FormatUint(uint64(lt), 10) + ")"
}

const (
	etherTypeIPv4  = uint16(layers.EthernetTypeIPv4)
	etherTypeIPv6  = uint16(layers.EthernetTypeIPv6)
	etherTypeDot1Q = uint16(layers.EthernetTypeDot1Q)
	etherTypeQinQ  = uint16(layers.EthernetTypeQinQ)
	// etherTypeDot1QOld is the pre-standard QinQ outer tag some switches use.
	etherTypeDot1QOld = 0x9100
	etherTypeMPLS     = uint16(layers.EthernetTypeMPLSUnicast)
	etherTypeMPLSMC   = uint16(layers.EthernetTypeMPLSMulticast)
	etherTypePPPoE    = uint16(layers.EthernetTypePPPoESession)
	// etherTypePBB is the 802.1ah I-tag (provider backbone bridging).
	etherTypePBB = 0x88e7
	// maxLength8023 is the largest 802.3 length field; a larger value in
	// the type/length field is an EtherType.
	maxLength8023 = 1500

	// Linux cooked headers: the largest protocol number that is not an
	// EtherType, the two of them that can carry IP, and the hardware
	// type of netlink sockets.
	maxLinuxProto     = 1536
	linuxProto8022    = 4
	linuxProtoPPPHDLC = 7
	arphrdNetlink     = 824

	pppIPv4 = uint16(layers.PPPTypeIPv4)
	pppIPv6 = uint16(layers.PPPTypeIPv6)
	// PPP protocols for MPLS unicast and multicast (RFC 3032).
	pppMPLS   = 0x0281
	pppMPLSMC = 0x0283

	// LLC SAPs.
	sapSNAP = 0xaa
	sapIP   = 0x06

	// MPLS labels at the bottom of the stack that announce something
	// other than the payload's first nibble: the generic associated
	// channel label (RFC 5586) and the OAM alert label (ITU-T Y.1711).
	mplsLabelGAL      = 13
	mplsLabelOAMAlert = 14

	// NFLOG attribute types and address families.
	nflogPacketHdr = 1
	nflogPayload   = 9
	nfprotoIPv4    = 2
	nfprotoIPv6    = 10

	// ARCnet protocol ids (RFC 1051, RFC 1201, RFC 2497).
	arcIP1051     = 0xf0
	arcARP1051    = 0xf1
	arcIP1201     = 0xd4
	arcIPv6       = 0xc4
	arcDiagnose   = 0x80
	arcBACnet     = 0xcd
	arcException  = 0xff
	ipoibHeaderAt = 40

	protoTCP      = uint8(layers.IPProtocolTCP)
	protoHopByHop = uint8(layers.IPProtocolIPv6HopByHop)
	protoRouting  = uint8(layers.IPProtocolIPv6Routing)
	protoFragment = uint8(layers.IPProtocolIPv6Fragment)
	protoDestOpts = uint8(layers.IPProtocolIPv6Destination)
	protoAH       = uint8(layers.IPProtocolAH)

	// optJumbo is the IPv6 jumbo payload option (RFC 2675); maxJumbo
	// bounds the length taken from it to what an int holds everywhere.
	optJumbo = 0xc2
	maxJumbo = 1<<31 - 1

	// maxTags, maxLabels and maxExt bound the loops over VLAN tags (and
	// other EtherType headers), MPLS labels and IPv6 extension headers, so
	// a hostile frame cannot make decoding slow.
	maxTags   = 8
	maxLabels = 16
	maxExt    = 16
)

// Decode decodes frame, of link type lt, into r. It sets every field of r
// except TS and Key. r is only meaningful when the status is StatusOK. The
// frame is taken as whole; DecodeLen is Decode for a frame the snapshot
// length cut.
func Decode(lt LinkType, frame []byte, r *record.Record) Status {
	return decodeFrame(lt, frame, 0, r, nil)
}

// DecodeLen is Decode for a frame that was wire bytes long on the wire, of
// which frame holds the first len(frame). The wire length matters only for
// an IPv4 total length of 0, which is taken from it. A wire length below
// len(frame) (0 when unknown) means the frame is whole.
func DecodeLen(lt LinkType, frame []byte, wire int, r *record.Record) Status {
	return decodeFrame(lt, frame, max(wire-len(frame), 0), r, nil)
}

// DecodeSegment is Decode that also returns, when the status is StatusOK,
// the TCP segment of the frame: the TCP header and the payload captured,
// cut at the IP datagram's length (no link padding). The slice aliases
// frame; nothing is allocated.
func DecodeSegment(lt LinkType, frame []byte, r *record.Record) (Status, []byte) {
	return DecodeSegmentLen(lt, frame, 0, r)
}

// DecodeSegmentLen is DecodeSegment with the frame's wire length, as in
// DecodeLen.
func DecodeSegmentLen(lt LinkType, frame []byte, wire int, r *record.Record) (Status, []byte) {
	var o out
	st := decodeFrame(lt, frame, max(wire-len(frame), 0), r, &o)
	return st, o.tcp
}

// out collects, when a caller asks, what a frame holds beyond its record:
// the TCP segment of a TCP packet, and for an IP packet that is not TCP its
// protocol and payload (where a tunnel starts).
type out struct {
	tcp []byte
	// proto and l4 are the IP protocol and payload (cut at the datagram's
	// length) of a frame whose status is StatusNotTCP.
	proto uint8
	l4    []byte
}

// ipLen is the one place an IP length becomes the record's ip_len, which
// is 32 bits wide: a big-TCP datagram or an IPv6 jumbogram keeps its
// length (the jumbo payload length is itself 32 bits).
func ipLen(n int) uint32 { return uint32(min(n, 0xffffffff)) }

// The functions below take the bytes captured from where their header
// starts (b) and cut, the number of bytes of the same layer that were on
// the wire after the end of b but not captured. tshark's "reported length"
// of a layer is len(b)+cut.

func decodeFrame(lt LinkType, frame []byte, cut int, r *record.Record, seg *out) Status {
	// Untagged IPv4 over Ethernet first: it is most of the traffic, and
	// the switches below have grown with the link layers.
	if lt == LinkEthernet {
		if len(frame) < 14 {
			return StatusLinkTruncated
		}
		et := binary.BigEndian.Uint16(frame[12:])
		switch {
		case et == etherTypeIPv4:
			return ipv4(frame[14:], cut, r, seg)
		case et <= maxLength8023:
			// Cisco ISL frames have an 802.3 length and a destination
			// of 01-00-0C-00-00 (or 0C-00-0C-00-00); tshark reads them
			// as ISL, not LLC.
			if (frame[0] == 0x01 || frame[0] == 0x0c) && frame[1] == 0 && frame[2] == 0x0c && frame[3] == 0 && frame[4] == 0 {
				return StatusNotIP
			}
			return ieee8023(et, frame[14:], cut, r, seg)
		}
		return ether(et, frame[14:], cut, r, seg)
	}
	switch lt {
	case LinkSLL:
		if len(frame) < 16 {
			return StatusLinkTruncated
		}
		return cooked(binary.BigEndian.Uint16(frame[2:]), binary.BigEndian.Uint16(frame[14:]), frame[16:], cut, r, seg)
	case LinkSLL2:
		if len(frame) < 20 {
			return StatusLinkTruncated
		}
		return cooked(binary.BigEndian.Uint16(frame[8:]), binary.BigEndian.Uint16(frame[0:]), frame[20:], cut, r, seg)
	case LinkNull:
		if len(frame) < 4 {
			return StatusLinkTruncated
		}
		// PPP's address and control bytes, or the family in the byte
		// order of the machine that captured, read as tshark does: the
		// order that leaves the upper half zero, and a value above an
		// 802.3 length is an EtherType.
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
	case LinkLoop:
		if len(frame) < 4 {
			return StatusLinkTruncated
		}
		// The family is big-endian, whatever machine captured.
		switch binary.BigEndian.Uint32(frame) {
		case 2:
			return ipv4(frame[4:], cut, r, seg)
		case 24, 28, 30:
			return ipv6(frame[4:], cut, r, seg)
		}
		return StatusNotIP
	case LinkRaw, LinkRawDLT12, LinkRawDLT14:
		return rawIP(frame, cut, r, seg)
	case LinkIPv4:
		return ipv4(frame, cut, r, seg)
	case LinkIPv6:
		return ipv6(frame, cut, r, seg)
	case LinkNFLOG:
		return nflog(frame, cut, r, seg)
	case LinkIPoIB:
		if len(frame) < ipoibHeaderAt+4 {
			return StatusLinkTruncated
		}
		switch binary.BigEndian.Uint16(frame[ipoibHeaderAt:]) {
		case etherTypeIPv4:
			return ipv4(frame[ipoibHeaderAt+4:], cut, r, seg)
		case etherTypeIPv6:
			return ipv6(frame[ipoibHeaderAt+4:], cut, r, seg)
		}
		return StatusNotIP
	case LinkArcnetBSD:
		return arcnet(frame, 2, true, cut, r, seg)
	case LinkArcnetLinux:
		return arcnet(frame, 4, false, cut, r, seg)
	}
	return StatusUnsupportedLink
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

// ether dispatches on an EtherType, skipping 802.1Q/802.1ad tags and
// 802.1ah I-tags and descending into MPLS and PPPoE sessions.
func ether(et uint16, b []byte, cut int, r *record.Record, seg *out) Status {
	for range maxTags {
		switch et {
		case etherTypeIPv4:
			return ipv4(b, cut, r, seg)
		case etherTypeIPv6:
			return ipv6(b, cut, r, seg)
		case etherTypeDot1Q, etherTypeQinQ, etherTypeDot1QOld:
			if len(b) < 4 {
				return StatusLinkTruncated
			}
			et = binary.BigEndian.Uint16(b[2:])
			b = b[4:]
			if et <= maxLength8023 {
				return ieee8023(et, b, cut, r, seg)
			}
		case etherTypeMPLS, etherTypeMPLSMC:
			return mpls(b, cut, r, seg)
		case etherTypePPPoE:
			return pppoe(b, cut, r, seg)
		case etherTypePBB:
			// I-tag (flags and I-SID), customer destination and
			// source addresses, then the customer's EtherType.
			if len(b) < 18 {
				return StatusLinkTruncated
			}
			et = binary.BigEndian.Uint16(b[16:])
			b = b[18:]
		default:
			return StatusNotIP
		}
	}
	return StatusNotIP
}

// limit cuts the layer b (with cut bytes not captured) to n bytes on the
// wire, as a length field in the header before it says.
func limit(b []byte, cut, n int) ([]byte, int) {
	if n < len(b) {
		return b[:n], 0
	}
	return b, min(cut, n-len(b))
}

// ieee8023 decodes what follows an 802.3 header whose length field is n:
// LLC, or Novell's raw 802.3 (0xffff), which is not IP.
func ieee8023(n uint16, b []byte, cut int, r *record.Record, seg *out) Status {
	b, cut = limit(b, cut, int(n))
	if len(b) < 2 {
		return StatusLinkTruncated
	}
	if b[0] == 0xff && b[1] == 0xff {
		return StatusNotIP
	}
	return llc(b, cut, r, seg)
}

// llc decodes an 802.2 LLC frame: SNAP, or IP directly (SAP 6).
func llc(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 3 {
		return StatusLinkTruncated
	}
	dsap, ssap, control := b[0], b[1], b[2]
	hdr := 3
	if control&3 != 3 { // an I or S frame: two control bytes
		hdr = 4
	}
	// Only information: I frames and UI frames carry a protocol.
	if control&1 != 0 && control != 3 {
		return StatusNotIP
	}
	if len(b) < hdr {
		return StatusLinkTruncated
	}
	switch {
	case dsap == sapSNAP && ssap == sapSNAP:
		if len(b) < hdr+5 {
			return StatusLinkTruncated
		}
		switch oui := uint32(b[hdr])<<16 | uint32(b[hdr+1])<<8 | uint32(b[hdr+2]); oui {
		case 0x000000, 0x0000f8, 0x080007: // EtherType encapsulation, Cisco, Apple
			return ether(binary.BigEndian.Uint16(b[hdr+3:]), b[hdr+5:], cut, r, seg)
		}
		return StatusNotIP
	case dsap == sapIP:
		return ipv4(b[hdr:], cut, r, seg)
	}
	return StatusNotIP
}

// mpls skips a label stack and decodes its payload by the first nibble,
// as tshark does with no pseudowire configured.
func mpls(b []byte, cut int, r *record.Record, seg *out) Status {
	for range maxLabels {
		if len(b) < 4 {
			return StatusLinkTruncated
		}
		e := binary.BigEndian.Uint32(b)
		b = b[4:]
		if e&0x100 == 0 {
			continue
		}
		if l := e >> 12; l == mplsLabelGAL || l == mplsLabelOAMAlert {
			return StatusNotIP
		}
		if len(b) < 1 {
			return StatusLinkTruncated
		}
		switch b[0] >> 4 {
		case 4:
			return ipv4(b, cut, r, seg)
		case 6:
			return ipv6(b, cut, r, seg)
		}
		return StatusNotIP // a pseudowire, or a control word
	}
	return StatusNotIP
}

// pppoe decodes a PPPoE session frame: the 6-byte header, whose length
// bounds the PPP frame, then PPP.
func pppoe(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 6 {
		return StatusLinkTruncated
	}
	b, cut = limit(b[6:], cut, int(binary.BigEndian.Uint16(b[4:])))
	return ppp(b, cut, r, seg)
}

// ppp decodes a PPP frame from its protocol field (one byte when
// compressed).
func ppp(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 1 {
		return StatusLinkTruncated
	}
	proto := uint16(b[0])
	n := 1
	if proto&1 == 0 {
		if len(b) < 2 {
			return StatusLinkTruncated
		}
		proto, n = binary.BigEndian.Uint16(b), 2
	}
	switch proto {
	case pppIPv4: // 0x0021, or 0x21 compressed
		return ipv4(b[n:], cut, r, seg)
	case pppIPv6:
		return ipv6(b[n:], cut, r, seg)
	case pppMPLS, pppMPLSMC:
		return mpls(b[n:], cut, r, seg)
	}
	return StatusNotIP
}

// nflog decodes a Linux NFLOG message: family, version and resource id,
// then TLVs (length and type in the capturing host's byte order, taken as
// little-endian; each padded to 4 bytes). The payload TLV holds the packet;
// its protocol is the hardware protocol of the packet header TLV (an
// EtherType) when there is one, else the family.
func nflog(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 4 {
		return StatusLinkTruncated
	}
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
	if len(b) < at+1 {
		return StatusLinkTruncated
	}
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

func ipv4(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 20 {
		return StatusIPTruncated
	}
	if b[0]>>4 != 4 {
		return StatusIPBadHeader
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 {
		return StatusIPBadHeader
	}
	if total < ihl {
		if total != 0 {
			return StatusIPBadHeader
		}
		// Segmentation offload: the length is the frame's.
		total = len(b) + cut
	}
	if len(b) < ihl {
		return StatusIPTruncated
	}
	if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
		return StatusFragment
	}
	// Bytes past the total length (Ethernet padding) are not part of the
	// datagram.
	if total < len(b) {
		b = b[:total]
	}
	if b[9] != protoTCP {
		if seg != nil {
			seg.proto, seg.l4 = b[9], b[ihl:]
		}
		return StatusNotTCP
	}
	r.Src = netip.AddrFrom4([4]byte(b[12:16]))
	r.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	r.IPLen = ipLen(total)
	return tcp(b[ihl:], r, seg)
}

func ipv6(b []byte, cut int, r *record.Record, seg *out) Status {
	if len(b) < 40 {
		return StatusIPTruncated
	}
	if b[0]>>4 != 6 {
		return StatusIPBadHeader
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	if plen == 0 {
		if plen = jumboLength(b); plen == 0 {
			return StatusIPv6ZeroLength
		}
	}
	if 40+plen < len(b) {
		b = b[:40+plen]
	}
	nh := b[6]
	off := 40
	for range maxExt {
		switch nh {
		case protoTCP:
			r.Src = netip.AddrFrom16([16]byte(b[8:24]))
			r.Dst = netip.AddrFrom16([16]byte(b[24:40]))
			r.IPLen = ipLen(plen + 40)
			return tcp(b[off:], r, seg)
		case protoHopByHop, protoRouting, protoDestOpts:
			if len(b) < off+2 {
				return StatusIPv6ExtTruncated
			}
			nh = b[off]
			off += (int(b[off+1]) + 1) * 8
		case protoFragment:
			if len(b) < off+8 {
				return StatusIPv6ExtTruncated
			}
			if binary.BigEndian.Uint16(b[off+2:])&0xfff8 != 0 {
				return StatusFragment
			}
			nh = b[off]
			off += 8
		case protoAH:
			if len(b) < off+2 {
				return StatusIPv6ExtTruncated
			}
			nh = b[off]
			off += (int(b[off+1]) + 2) * 4
		default:
			if seg != nil {
				seg.proto, seg.l4 = nh, b[off:]
			}
			return StatusNotTCP
		}
		if off > len(b) {
			return StatusIPv6ExtTruncated
		}
	}
	return StatusNotTCP
}

// jumboLength is the payload length of an IPv6 jumbogram (RFC 2675): a
// hop-by-hop header right after the fixed header holding a jumbo payload
// option (type 0xc2, 4 bytes of length above 65535). It is 0 for anything
// else, which leaves a payload length of 0 unrecorded.
func jumboLength(b []byte) int {
	if b[6] != protoHopByHop || len(b) < 48 {
		return 0
	}
	end := min(40+(int(b[41])+1)*8, len(b))
	for off := 42; off < end; {
		switch typ := b[off]; {
		case typ == 0: // Pad1
			off++
			continue
		case off+2 > end:
			return 0
		case typ == optJumbo && b[off+1] == 4 && off+6 <= end:
			n := binary.BigEndian.Uint32(b[off+2:])
			if n <= 0xffff || uint64(n) > uint64(maxJumbo) {
				return 0
			}
			return int(n)
		}
		off += 2 + int(b[off+1])
	}
	return 0
}

func tcp(b []byte, r *record.Record, seg *out) Status {
	if len(b) < 20 {
		return StatusTCPTruncated
	}
	if b[12]>>4 < 5 {
		return StatusTCPBadOffset
	}
	r.SrcPort = binary.BigEndian.Uint16(b[0:])
	r.DstPort = binary.BigEndian.Uint16(b[2:])
	r.Flags = uint16(b[12]&1)<<8 | uint16(b[13])
	if seg != nil {
		seg.tcp = b
	}
	return StatusOK
}
