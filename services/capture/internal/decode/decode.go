// Package decode turns one captured frame into a connpipe record: the
// addresses of its first IP layer, the TCP ports and flags, and the IP length.
//
// A frame gives a record when the first network layer after the link layer
// is IPv4 or IPv6 and carries TCP directly; IPv6 extension headers
// (hop-by-hop, routing, destination options, fragment, AH) may sit between.
// The link types are the rows of one table (links, in link.go); after the
// link header come 802.1Q/QinQ tags, MPLS label stacks, PPPoE sessions,
// 802.3 with LLC or LLC/SNAP and 802.1ah I-tags (ether.go). TCP inside a tunnel (GRE, IP-in-IP, UDP encapsulations, an MPLS
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

	"github.com/connpipe/connpipe/shared/record"
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
// frame.
func DecodeSegment(lt LinkType, frame []byte, r *record.Record) (Status, []byte) {
	return DecodeSegmentLen(lt, frame, 0, r)
}

// DecodeSegmentLen is DecodeSegment with the frame's wire length, as in
// DecodeLen. It allocates what it collects the segment in; a Decoder
// does not.
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
	if lt == LinkEthernet { // most of the traffic: direct calls
		if len(frame) < ethHeader {
			return StatusLinkTruncated
		}
		if binary.BigEndian.Uint16(frame[12:]) == etherTypeIPv4 {
			return ipv4(frame[ethHeader:], cut, r, seg)
		}
		return ethernet(frame, cut, r, seg)
	}
	l := lookup(lt)
	switch {
	case l == nil:
		return StatusUnsupportedLink
	case len(frame) < l.header:
		return StatusLinkTruncated
	}
	return l.decode(frame, cut, r, seg)
}
