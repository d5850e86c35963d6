package decode

import (
	"encoding/binary"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket/layers"
)

// The layers between a link header and IP: EtherTypes with their tags,
// 802.3 with LLC and SNAP, MPLS label stacks, PPPoE and PPP.

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

	// maxTags and maxLabels bound the loops over VLAN tags (and other
	// EtherType headers) and MPLS labels, so a hostile frame cannot make
	// decoding slow.
	maxTags   = 8
	maxLabels = 16
)

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
