package decode

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket/layers"
)

// Tunnel is the encapsulation a record came out of (mirror mode).
type Tunnel uint8

// Tunnels capture opens.
const (
	TunnelNone Tunnel = iota
	TunnelVXLAN
	TunnelGeneve
	TunnelGRE
	TunnelERSPAN
)

var tunnelNames = [...]string{TunnelNone: "none", TunnelVXLAN: "vxlan", TunnelGeneve: "geneve", TunnelGRE: "gre", TunnelERSPAN: "erspan"}

// String is the tunnel's name, as DECAP lists it.
func (t Tunnel) String() string {
	if int(t) < len(tunnelNames) {
		return tunnelNames[t]
	}
	return "unknown"
}

// Default UDP ports of the UDP tunnels (IANA).
const (
	DefaultVXLANPort  = 4789
	DefaultGenevePort = 6081
)

// Tunnels is what mirror mode opens: the tunnels named in DECAP, the UDP
// ports of VXLAN and Geneve, and optionally the only VNIs (VXLAN, Geneve)
// and ERSPAN session ids accepted. A tunnel frame with another id gives
// StatusTunnelUnknownID.
type Tunnels struct {
	VXLAN, Geneve, GRE, ERSPAN bool
	VXLANPort, GenevePort      uint16
	// VNIs, when not empty, are the only VXLAN and Geneve network ids
	// accepted; Sessions the only ERSPAN session ids (an ERSPAN type I
	// frame has none, and is then not accepted).
	VNIs     []uint32
	Sessions []uint16
}

// Any reports whether a tunnel is configured.
func (t *Tunnels) Any() bool { return t.VXLAN || t.Geneve || t.GRE || t.ERSPAN }

// ParseTunnels parses a comma-separated list of vxlan, geneve, gre and
// erspan (empty: none) and sets the ports to their defaults.
func ParseTunnels(list string) (Tunnels, error) {
	t := Tunnels{VXLANPort: DefaultVXLANPort, GenevePort: DefaultGenevePort}
	for _, w := range strings.Split(list, ",") {
		switch strings.ToLower(strings.TrimSpace(w)) {
		case "":
		case "vxlan":
			t.VXLAN = true
		case "geneve":
			t.Geneve = true
		case "gre":
			t.GRE = true
		case "erspan":
			t.ERSPAN = true
		default:
			return t, fmt.Errorf("unknown tunnel %q: want vxlan, geneve, gre or erspan", strings.TrimSpace(w))
		}
	}
	return t, nil
}

// ParseIDs parses a comma-separated list of ids no larger than maxID.
func ParseIDs(list string, maxID uint32) ([]uint32, error) {
	var ids []uint32
	for _, w := range strings.Split(list, ",") {
		if w = strings.TrimSpace(w); w == "" {
			continue
		}
		n, err := strconv.ParseUint(w, 10, 32)
		if err != nil || n > uint64(maxID) {
			return nil, fmt.Errorf("id %q: want a number 0..%d", w, maxID)
		}
		ids = append(ids, uint32(n))
	}
	return ids, nil
}

// Limits of the ids.
const (
	MaxVNI       = 1<<24 - 1
	MaxSessionID = 1<<10 - 1
)

const (
	protoUDP = uint8(layers.IPProtocolUDP)
	protoGRE = uint8(layers.IPProtocolGRE)

	etherTypeTEB = uint16(layers.EthernetTypeTransparentEthernetBridging)
	// etherTypeERSPAN is GRE's protocol for ERSPAN types I and II,
	// etherTypeERSPAN3 for type III.
	etherTypeERSPAN  = uint16(layers.EthernetTypeERSPAN)
	etherTypeERSPAN3 = 0x22eb

	// erspan3Header is the length of an ERSPAN type III header; its last
	// bit (O) announces an 8-byte platform-specific subheader.
	erspan3Header    = 12
	erspan3SubHeader = 8
)

// tunnel opens the tunnel whose outer IP packet o describes, when it is
// one that is configured, and decodes the frame inside it into r. It
// returns TunnelNone for a packet that is no configured tunnel (its status
// then stays StatusNotTCP).
func (d *Decoder) tunnel(o *out, r *record.Record) (Status, Tunnel) {
	switch o.proto {
	case protoUDP:
		if len(o.l4) < 8 {
			return StatusNotTCP, TunnelNone
		}
		port := binary.BigEndian.Uint16(o.l4[2:])
		b := o.l4[8:]
		if n := int(binary.BigEndian.Uint16(o.l4[4:])); n >= 8 && n-8 < len(b) {
			b = b[:n-8]
		}
		switch {
		case d.tun.VXLAN && port == d.tun.VXLANPort:
			return d.vxlan(b, r, o), TunnelVXLAN
		case d.tun.Geneve && port == d.tun.GenevePort:
			return d.geneve(b, r, o), TunnelGeneve
		}
	case protoGRE:
		if d.tun.GRE || d.tun.ERSPAN {
			return d.gre(o.l4, r, o)
		}
	}
	return StatusNotTCP, TunnelNone
}

// inner decodes the frame a tunnel carries: Ethernet, or an IP packet
// when the tunnel's protocol field says so.
func inner(et uint16, b []byte, r *record.Record, o *out) Status {
	o.proto, o.l4 = 0, nil
	if et == etherTypeTEB {
		return decodeFrame(LinkEthernet, b, 0, r, o)
	}
	return ether(et, b, 0, r, o)
}

// vxlan opens a VXLAN header (RFC 7348) with gopacket's layer.
func (d *Decoder) vxlan(b []byte, r *record.Record, o *out) Status {
	if len(b) < 8 {
		return StatusTunnelMalformed
	}
	if err := d.vx.DecodeFromBytes(b, nopFeedback{}); err != nil {
		return StatusTunnelMalformed
	}
	if !d.vni(d.vx.VNI) {
		return StatusTunnelUnknownID
	}
	return inner(etherTypeTEB, d.vx.Payload, r, o)
}

// geneve opens a Geneve header (RFC 8926) with gopacket's layer, after
// checking that its options fit (gopacket's own check is a byte short).
func (d *Decoder) geneve(b []byte, r *record.Record, o *out) Status {
	if len(b) < 8 || len(b) < 8+int(b[0]&0x3f)*4 || b[0]>>6 != 0 {
		return StatusTunnelMalformed
	}
	d.gn.Options = d.gn.Options[:0]
	if err := d.gn.DecodeFromBytes(b, nopFeedback{}); err != nil {
		return StatusTunnelMalformed
	}
	if !d.vni(d.gn.VNI) {
		return StatusTunnelUnknownID
	}
	return inner(uint16(d.gn.Protocol), d.gn.Payload, r, o)
}

// greHeaderLen is the length of a GRE header (RFC 2784, 2890) from its
// flags, or 0 for one gopacket would read past the end of b, with source
// routing (obsolete) or of another version (PPTP's is 1).
func greHeaderLen(b []byte) int {
	if len(b) < 4 || b[0]&0x40 != 0 || b[1]&0x07 != 0 {
		return 0
	}
	n := 4
	for _, bit := range [...]byte{0x80, 0x20, 0x10} { // checksum, key, sequence
		if b[0]&bit != 0 {
			n += 4
		}
	}
	if b[1]&0x80 != 0 { // acknowledgment number (RFC 2637), which gopacket reads
		n += 4
	}
	if len(b) < n {
		return 0
	}
	return n
}

// gre opens a GRE header with gopacket's layer: transparent Ethernet
// bridging and IP (DECAP=gre), ERSPAN (DECAP=erspan).
func (d *Decoder) gre(b []byte, r *record.Record, o *out) (Status, Tunnel) {
	if len(b) >= 2 && b[1]&0x07 != 0 {
		return StatusNotTCP, TunnelNone // enhanced GRE (PPTP), not a mirror
	}
	tun := TunnelGRE
	if len(b) >= 4 {
		switch binary.BigEndian.Uint16(b[2:]) {
		case etherTypeERSPAN, etherTypeERSPAN3:
			tun = TunnelERSPAN
		}
	}
	if (tun == TunnelGRE && !d.tun.GRE) || (tun == TunnelERSPAN && !d.tun.ERSPAN) {
		return StatusNotTCP, TunnelNone
	}
	if greHeaderLen(b) == 0 {
		return StatusTunnelMalformed, tun
	}
	if err := d.gh.DecodeFromBytes(b, nopFeedback{}); err != nil {
		return StatusTunnelMalformed, tun
	}
	p := d.gh.Payload
	switch et := uint16(d.gh.Protocol); et {
	case etherTypeERSPAN:
		if !d.gh.SeqPresent {
			// Type I: no ERSPAN header, no session id.
			if len(d.tun.Sessions) > 0 {
				return StatusTunnelUnknownID, tun
			}
			return inner(etherTypeTEB, p, r, o), tun
		}
		return d.erspan2(p, r, o), tun
	case etherTypeERSPAN3:
		return d.erspan3(p, r, o), tun
	default:
		return inner(et, p, r, o), tun
	}
}

// erspan2 opens an ERSPAN type II header with gopacket's layer.
func (d *Decoder) erspan2(b []byte, r *record.Record, o *out) Status {
	if len(b) < 8 {
		return StatusTunnelMalformed
	}
	if err := d.er2.DecodeFromBytes(b, nopFeedback{}); err != nil || d.er2.Version != layers.ERSPANIIVersion {
		return StatusTunnelMalformed
	}
	if !d.session(d.er2.SessionID) {
		return StatusTunnelUnknownID
	}
	return inner(etherTypeTEB, d.er2.Payload, r, o)
}

// erspan3 opens an ERSPAN type III header. gopacket has no layer for it
// (v1.1.19 knows type II only), so it is read here: version 2 in the
// first nibble, the session id in the low 10 bits of the second 16-bit
// word, and the O flag in the last bit of the 12 bytes announcing the
// platform-specific subheader.
func (d *Decoder) erspan3(b []byte, r *record.Record, o *out) Status {
	if len(b) < erspan3Header || b[0]>>4 != 2 {
		return StatusTunnelMalformed
	}
	n := erspan3Header
	if b[erspan3Header-1]&1 != 0 {
		n += erspan3SubHeader
	}
	if len(b) < n {
		return StatusTunnelMalformed
	}
	if !d.session(binary.BigEndian.Uint16(b[2:]) & MaxSessionID) {
		return StatusTunnelUnknownID
	}
	return inner(etherTypeTEB, b[n:], r, o)
}

func (d *Decoder) vni(v uint32) bool {
	return len(d.tun.VNIs) == 0 || slices.Contains(d.tun.VNIs, v)
}

func (d *Decoder) session(s uint16) bool {
	return len(d.tun.Sessions) == 0 || slices.Contains(d.tun.Sessions, s)
}

// nopFeedback is the gopacket.DecodeFeedback of layers decoded on their
// own: a truncated header is an error already.
type nopFeedback struct{}

func (nopFeedback) SetTruncated() {}
