// Package decode turns one captured frame into a connpipe record: the
// addresses of its first IP layer, the TCP ports and flags, and the IP length.
//
// A frame gives a record when the first network layer after the link layer
// (and any 802.1Q/QinQ tags) is IPv4 or IPv6 and carries TCP directly; IPv6
// extension headers (hop-by-hop, routing, destination options, fragment, AH)
// may sit between. TCP inside a tunnel (GRE, IP-in-IP, UDP encapsulations) or
// quoted in an ICMP error is not a TCP packet sent to a port, and neither is a
// non-first IP fragment: those give StatusNotTCP or StatusFragment. A frame
// whose headers are cut or inconsistent gives one of the malformed statuses;
// a TCP header is needed only up to its flags (20 bytes), so a packet cut by
// the snapshot length after the TCP header is still recorded.
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

	StatusUnsupportedLink
	StatusLinkTruncated
	StatusIPTruncated
	StatusIPBadHeader
	StatusIPv6ExtTruncated
	StatusTCPTruncated
	StatusTCPBadOffset

	NumStatus
)

var statusNames = [NumStatus]string{
	StatusOK:               "ok",
	StatusNotIP:            "not_ip",
	StatusNotTCP:           "not_tcp",
	StatusFragment:         "fragment",
	StatusUnsupportedLink:  "unsupported_link",
	StatusLinkTruncated:    "link_truncated",
	StatusIPTruncated:      "ip_truncated",
	StatusIPBadHeader:      "ip_bad_header",
	StatusIPv6ExtTruncated: "ipv6_ext_truncated",
	StatusTCPTruncated:     "tcp_truncated",
	StatusTCPBadOffset:     "tcp_bad_offset",
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
		LinkRaw, LinkRawDLT12, LinkRawDLT14, LinkIPv4, LinkIPv6:
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

	protoTCP      = uint8(layers.IPProtocolTCP)
	protoHopByHop = uint8(layers.IPProtocolIPv6HopByHop)
	protoRouting  = uint8(layers.IPProtocolIPv6Routing)
	protoFragment = uint8(layers.IPProtocolIPv6Fragment)
	protoDestOpts = uint8(layers.IPProtocolIPv6Destination)
	protoAH       = uint8(layers.IPProtocolAH)

	// maxTags and maxExt bound the loops over VLAN tags and IPv6 extension
	// headers, so a hostile frame cannot make decoding slow.
	maxTags = 8
	maxExt  = 16
)

// Decode decodes frame, of link type lt, into r. It sets every field of r
// except TS and Key. r is only meaningful when the status is StatusOK.
func Decode(lt LinkType, frame []byte, r *record.Record) Status {
	return decodeFrame(lt, frame, r, nil)
}

// DecodeSegment is Decode that also returns, when the status is StatusOK,
// the TCP segment of the frame: the TCP header and the payload captured,
// cut at the IP datagram's length (no link padding). The slice aliases
// frame; nothing is allocated.
func DecodeSegment(lt LinkType, frame []byte, r *record.Record) (Status, []byte) {
	var seg []byte
	st := decodeFrame(lt, frame, r, &seg)
	return st, seg
}

func decodeFrame(lt LinkType, frame []byte, r *record.Record, seg *[]byte) Status {
	switch lt {
	case LinkEthernet:
		if len(frame) < 14 {
			return StatusLinkTruncated
		}
		return ether(binary.BigEndian.Uint16(frame[12:]), frame[14:], r, seg)
	case LinkSLL:
		if len(frame) < 16 {
			return StatusLinkTruncated
		}
		return ether(binary.BigEndian.Uint16(frame[14:]), frame[16:], r, seg)
	case LinkSLL2:
		if len(frame) < 20 {
			return StatusLinkTruncated
		}
		return ether(binary.BigEndian.Uint16(frame[0:]), frame[20:], r, seg)
	case LinkNull, LinkLoop:
		if len(frame) < 4 {
			return StatusLinkTruncated
		}
		// The family is in the byte order of the machine that captured
		// (NULL) or big-endian (LOOP); a family fits in one byte, so the
		// order that gives a small number is the right one.
		fam := binary.LittleEndian.Uint32(frame)
		if fam > 0xff {
			fam = binary.BigEndian.Uint32(frame)
		}
		switch fam {
		case 2:
			return ipv4(frame[4:], r, seg)
		case 24, 28, 30: // AF_INET6 on the BSDs, FreeBSD and Darwin
			return ipv6(frame[4:], r, seg)
		}
		return StatusNotIP
	case LinkRaw, LinkRawDLT12, LinkRawDLT14:
		return rawIP(frame, r, seg)
	case LinkIPv4:
		return ipv4(frame, r, seg)
	case LinkIPv6:
		return ipv6(frame, r, seg)
	}
	return StatusUnsupportedLink
}

func rawIP(b []byte, r *record.Record, seg *[]byte) Status {
	if len(b) < 1 {
		return StatusIPTruncated
	}
	switch b[0] >> 4 {
	case 4:
		return ipv4(b, r, seg)
	case 6:
		return ipv6(b, r, seg)
	}
	return StatusNotIP
}

// ether dispatches on an EtherType, skipping 802.1Q/802.1ad tags.
func ether(et uint16, b []byte, r *record.Record, seg *[]byte) Status {
	for range maxTags {
		switch et {
		case etherTypeIPv4:
			return ipv4(b, r, seg)
		case etherTypeIPv6:
			return ipv6(b, r, seg)
		case etherTypeDot1Q, etherTypeQinQ, etherTypeDot1QOld:
			if len(b) < 4 {
				return StatusLinkTruncated
			}
			et = binary.BigEndian.Uint16(b[2:])
			b = b[4:]
		default:
			return StatusNotIP
		}
	}
	return StatusNotIP
}

func ipv4(b []byte, r *record.Record, seg *[]byte) Status {
	if len(b) < 20 {
		return StatusIPTruncated
	}
	if b[0]>>4 != 4 {
		return StatusIPBadHeader
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl {
		return StatusIPBadHeader
	}
	if len(b) < ihl {
		return StatusIPTruncated
	}
	if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
		return StatusFragment
	}
	if b[9] != protoTCP {
		return StatusNotTCP
	}
	// Bytes past the total length (Ethernet padding) are not part of the
	// datagram.
	if total < len(b) {
		b = b[:total]
	}
	r.Src = netip.AddrFrom4([4]byte(b[12:16]))
	r.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	r.IPLen = uint16(total)
	return tcp(b[ihl:], r, seg)
}

func ipv6(b []byte, r *record.Record, seg *[]byte) Status {
	if len(b) < 40 {
		return StatusIPTruncated
	}
	if b[0]>>4 != 6 {
		return StatusIPBadHeader
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	// A zero payload length is a jumbogram (or a bogus header): use what was
	// captured.
	if plen != 0 && 40+plen < len(b) {
		b = b[:40+plen]
	}
	nh := b[6]
	off := 40
	for range maxExt {
		switch nh {
		case protoTCP:
			r.Src = netip.AddrFrom16([16]byte(b[8:24]))
			r.Dst = netip.AddrFrom16([16]byte(b[24:40]))
			r.IPLen = uint16(min(plen+40, 0xffff))
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
			return StatusNotTCP
		}
		if off > len(b) {
			return StatusIPv6ExtTruncated
		}
	}
	return StatusNotTCP
}

func tcp(b []byte, r *record.Record, seg *[]byte) Status {
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
		*seg = b
	}
	return StatusOK
}
