package decode

import (
	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Decoder is the fast decoder with what it hands over to gopacket: the
// tunnels of mirror mode, and the link types only gopacket knows. The
// fast path stays first: a plain frame is decoded as by DecodeLen, and
// only a frame it leaves as StatusNotTCP (a possible tunnel) or
// StatusUnsupportedLink goes further. A Decoder keeps gopacket's layers
// between frames and is not safe for concurrent use: one per reader.
type Decoder struct {
	tun Tunnels
	on  bool
	vx  layers.VXLAN
	gn  layers.Geneve
	gh  layers.GRE
	er2 layers.ERSPANII
	// o is the frame's segment, kept here: on the stack it would escape
	// through the link table's decoders, one allocation a frame.
	o out
}

// NewDecoder returns a Decoder opening the tunnels in t (none when t is
// the zero value).
func NewDecoder(t Tunnels) *Decoder {
	return &Decoder{tun: t, on: t.Any()}
}

// Decode decodes frame, of link type lt and wire bytes long on the wire
// (as DecodeLen), into r. It returns the status, the TCP segment when
// StatusOK (as DecodeSegmentLen), and the tunnel the record came out of.
// For a tunnel frame, r holds the inner packet and the status is the
// inner frame's, StatusTunnelUnknownID or StatusTunnelMalformed.
func (d *Decoder) Decode(lt LinkType, frame []byte, wire int, r *record.Record) (Status, []byte, Tunnel) {
	o := &d.o
	*o = out{}
	cut := max(wire-len(frame), 0)
	st := decodeFrame(lt, frame, cut, r, o)
	if st == StatusUnsupportedLink {
		st = fallback(lt, frame, cut, r, o)
	}
	if st != StatusNotTCP || !d.on {
		return st, o.tcp, TunnelNone
	}
	st, tun := d.tunnel(o, r)
	return st, o.tcp, tun
}

// Fallback reports whether frames of link type lt, which the fast path
// does not know, are decoded by gopacket.
func Fallback(lt LinkType) bool {
	_, ok := fallbackDecoder(lt)
	return ok
}

// fallbackDecoder is gopacket's decoder for a link type: its own, but for
// PPP in HDLC-like framing (RFC 1662), which gopacket does not list and
// whose address and control bytes its PPP decoder skips.
func fallbackDecoder(lt LinkType) (gopacket.Decoder, bool) {
	if lt == LinkPPPHDLC {
		lt = LinkType(layers.LinkTypePPP)
	}
	if lt > 0xff {
		return nil, false
	}
	dec := layers.LinkTypeMetadata[lt].DecodeWith
	if _, unknown := dec.(error); unknown || dec == nil {
		return nil, false
	}
	return dec, true
}

// LinkPPPHDLC is LINKTYPE_PPP_HDLC: PPP in HDLC-like framing.
const LinkPPPHDLC LinkType = 50

// fallback decodes a frame of a link type the fast path does not know
// with gopacket's decoders (FDDI, PPP and others): gopacket finds where
// the first IP layer starts, and the fast path decodes from there, so that
// what counts is the same as for every other link type. Its layers are not
// DecodingLayers (FDDI and PPP have no DecodeFromBytes in gopacket
// v1.1.19), so a packet is built per frame: this path allocates, which
// only such link types pay for.
func fallback(lt LinkType, frame []byte, cut int, r *record.Record, o *out) Status {
	dec, ok := fallbackDecoder(lt)
	if !ok {
		return StatusUnsupportedLink
	}
	p := gopacket.NewPacket(frame, dec, gopacket.DecodeOptions{NoCopy: true})
	for i, l := range p.Layers() {
		t := l.LayerType()
		switch t {
		case layers.LayerTypeIPv4, layers.LayerTypeIPv6:
		case gopacket.LayerTypeDecodeFailure:
			if i == 0 {
				return StatusLinkTruncated
			}
			return StatusNotIP
		default:
			continue
		}
		// The layer's bytes alias frame (NoCopy): where they start is
		// where the IP header is, whatever the layers before it counted
		// as their own (PPP leaves out its address and control bytes).
		off := cap(frame) - cap(l.LayerContents())
		if off < 0 || off > len(frame) {
			return StatusLinkBadHeader
		}
		if t == layers.LayerTypeIPv4 {
			return ipv4(frame[off:], cut, r, o)
		}
		return ipv6(frame[off:], cut, r, o)
	}
	return StatusNotIP
}
