package decode

import (
	"encoding/binary"
	"net/netip"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket/layers"
)

// The network and transport layers: IPv4, IPv6 with its extension
// headers, and the TCP header's ports and flags.

const (
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

	// maxExt bounds the loop over IPv6 extension headers, so a hostile
	// frame cannot make decoding slow.
	maxExt = 16
)

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
