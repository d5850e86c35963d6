// Command gencrafted writes the crafted captures of testdata/crafted: one file per family of
// link layer or header oddity that real captures hold and the sample
// captures do not. Frames are built with gopacket's layers where gopacket
// serialises the protocol (Ethernet, 802.1Q, MPLS, PPPoE, PPP, LLC, SNAP,
// IPv4, IPv6, TCP) and by hand from the RFCs for the rest (NFLOG TLVs, the
// 802.1ah I-tag, the IPoIB header, ARCnet, offloaded lengths, timestamps).
// The truth for each file comes from tshark, not from this program:
//
//	cd services/capture
//	go run ./cmd/gencrafted
//	cmd/golden/golden.sh testdata/crafted testdata/crafted/golden
//
// FDDI and PPP-in-HDLC frames (fddi.pcap, ppp-hdlc.pcap) are for the
// link types only gopacket's decoders know; mirror/tunnels.pcap holds TCP
// inside the tunnels of mirror mode (VXLAN, Geneve, GRE, ERSPAN I/II/III),
// whose truth is made with GOLDEN_INNER=1 (see testdata/crafted/README.md).
//
// It also writes every crafted frame as a seed of the decoder's fuzz target
// (internal/decode/testdata/fuzz/FuzzDecode/crafted-*). The output is
// deterministic, so running it again rewrites the same bytes.
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Link types written here (LINKTYPE_ values).
const (
	ltEthernet    = 1
	ltArcnetBSD   = 7
	ltRaw         = 101
	ltIPv4        = 228
	ltArcnetLinux = 129
	ltNFLOG       = 239
	ltIPoIB       = 242
	ltNull        = 0
	ltLoop        = 108
	ltSLL         = 113
	ltSLL2        = 276
	ltFDDI        = 10
	ltPPPHDLC     = 50
)

// base is the capture time of the first frame of every file; each frame is
// one second and a few microseconds after the one before.
const base = 1700000000

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
	v4a  = net.IP{10, 1, 0, 1}
	v4b  = net.IP{10, 1, 0, 2}
	v6a  = net.ParseIP("2001:db8::a")
	v6b  = net.ParseIP("2001:db8::b")
)

// frame is one record: the bytes captured and, when larger, the length on
// the wire; sec/frac are written as they are (frac in µs or ns by the file).
type frame struct {
	data      []byte
	wire      int
	sec, frac uint32
	link      uint32 // pcapng interface link type; 0 = the file's
}

type capture struct {
	name   string
	link   uint32
	nano   bool
	frames []frame
}

func main() {
	dir := "testdata/crafted"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	caps := []capture{
		{name: "mpls.pcap", link: ltEthernet, frames: mpls()},
		{name: "pppoe.pcap", link: ltEthernet, frames: pppoe()},
		{name: "llc-snap.pcap", link: ltEthernet, frames: llcSNAP()},
		{name: "pbb.pcap", link: ltEthernet, frames: pbb()},
		{name: "nflog.pcap", link: ltNFLOG, frames: nflog()},
		{name: "ipoib.pcap", link: ltIPoIB, frames: ipoib()},
		{name: "arcnet-bsd.pcap", link: ltArcnetBSD, frames: arcnet(false)},
		{name: "arcnet-linux.pcap", link: ltArcnetLinux, frames: arcnet(true)},
		{name: "offload.pcap", link: ltEthernet, frames: offload()},
		{name: "sll.pcap", link: ltSLL, frames: cooked(false)},
		{name: "sll2.pcap", link: ltSLL2, frames: cooked(true)},
		{name: "null.pcap", link: ltNull, frames: null()},
		{name: "loop.pcap", link: ltLoop, frames: loop()},
		{name: "raw.pcap", link: ltRaw, frames: raw()},
		{name: "raw-ipv4.pcap", link: ltIPv4, frames: raw()},
		{name: "tcp-odd.pcap", link: ltEthernet, frames: oddTCP()},
		{name: "ts-micro.pcap", link: ltRaw, frames: timestamps(false)},
		{name: "ts-nano.pcap", link: ltRaw, nano: true, frames: timestamps(true)},
		{name: "fddi.pcap", link: ltFDDI, frames: fddi()},
		{name: "ppp-hdlc.pcap", link: ltPPPHDLC, frames: pppHDLC()},
	}
	seeds := "internal/decode/testdata/fuzz/FuzzDecode"
	if err := os.MkdirAll(seeds, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, c := range caps {
		stamp(c.frames)
		if err := os.WriteFile(filepath.Join(dir, c.name), writePcap(c), 0o644); err != nil {
			log.Fatal(err)
		}
		for i, f := range c.frames {
			seed := fmt.Sprintf("go test fuzz v1\nuint32(%d)\n[]byte(%s)\n", c.link, strconv.Quote(string(f.data)))
			name := fmt.Sprintf("crafted-%s-%02d", strings.TrimSuffix(c.name, ".pcap"), i)
			if err := os.WriteFile(filepath.Join(seeds, name), []byte(seed), 0o644); err != nil {
				log.Fatal(err)
			}
		}
	}
	// The tunnels of mirror mode, in a directory of their own: their truth
	// is the packet inside (cmd/golden/golden.sh with GOLDEN_INNER=1).
	mirror := mirrorFrames()
	stamp(mirror)
	if err := os.MkdirAll(filepath.Join(dir, "mirror"), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mirror", "tunnels.pcap"), writePcap(capture{link: ltEthernet, frames: mirror}), 0o644); err != nil {
		log.Fatal(err)
	}
	// The same link layers in one pcapng file, one interface each (but
	// SLL2: gopacket's pcapng writer keeps a link type in one byte).
	var mixed []frame
	for _, c := range caps[:10] {
		for _, f := range c.frames {
			f.link = c.link
			mixed = append(mixed, f)
		}
	}
	stamp(mixed)
	if err := os.WriteFile(filepath.Join(dir, "links.pcapng"), writePcapng(mixed), 0o644); err != nil {
		log.Fatal(err)
	}
	// SLL2 in pcapng, as dumpcap writes a capture on Linux's "any"
	// device: a link type above 255, written by hand.
	sll2 := cooked(true)
	stamp(sll2)
	if err := os.WriteFile(filepath.Join(dir, "sll2.pcapng"), writePcapngRaw(ltSLL2, sll2), 0o644); err != nil {
		log.Fatal(err)
	}
}

// stamp gives frames without a timestamp one a second apart.
func stamp(fs []frame) {
	for i := range fs {
		if fs[i].sec == 0 {
			fs[i].sec, fs[i].frac = uint32(base+i), uint32(1000*i+7)
		}
	}
}

// tcpSpec is the TCP/IP part of a crafted frame.
type tcpSpec struct {
	v6         bool
	sport      uint16
	dport      uint16
	flags      uint16 // 9 flag bits; bits 9-11 go to the reserved field
	reserved   uint8
	payload    int
	dataOffset uint8  // 0: from the options
	src, dst   net.IP // nil: v4a/v6a to v4b/v6b
}

func tcpL(s tcpSpec) *layers.TCP {
	t := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: 1000, Ack: 2000, Window: 512,
		FIN: s.flags&0x01 != 0, SYN: s.flags&0x02 != 0, RST: s.flags&0x04 != 0, PSH: s.flags&0x08 != 0,
		ACK: s.flags&0x10 != 0, URG: s.flags&0x20 != 0, ECE: s.flags&0x40 != 0, CWR: s.flags&0x80 != 0, NS: s.flags&0x100 != 0}
	return t
}

// ip serialises an IPv4 or IPv6 packet carrying a TCP segment.
func ip(s tcpSpec) []byte {
	t := tcpL(s)
	var l []gopacket.SerializableLayer
	src, dst := s.src, s.dst
	if src == nil {
		src, dst = v4a, v4b
		if s.v6 {
			src, dst = v6a, v6b
		}
	}
	if s.v6 {
		h := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
		t.SetNetworkLayerForChecksum(h)
		l = append(l, h)
	} else {
		h := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst, Flags: layers.IPv4DontFragment}
		t.SetNetworkLayerForChecksum(h)
		l = append(l, h)
	}
	l = append(l, t, gopacket.Payload(bytes.Repeat([]byte{'x'}, s.payload)))
	b := serialize(l...)
	ipHdr := 20
	if s.v6 {
		ipHdr = 40
	}
	if s.reserved != 0 {
		b[ipHdr+12] |= s.reserved << 1
	}
	if s.dataOffset != 0 {
		b[ipHdr+12] = s.dataOffset<<4 | b[ipHdr+12]&0x0f
	}
	return b
}

func serialize(l ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, l...); err != nil {
		log.Fatal(err)
	}
	return append([]byte{}, buf.Bytes()...)
}

func v4(sport, dport uint16) tcpSpec {
	return tcpSpec{sport: sport, dport: dport, flags: 0x18, payload: 10}
}
func v6(sport, dport uint16) tcpSpec {
	return tcpSpec{v6: true, sport: sport, dport: dport, flags: 0x02}
}

func etherType(s tcpSpec) layers.EthernetType {
	if s.v6 {
		return layers.EthernetTypeIPv6
	}
	return layers.EthernetTypeIPv4
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: t}
}

// ethRaw builds an Ethernet frame around bytes already serialised.
func ethRaw(t layers.EthernetType, rest ...[]byte) []byte {
	return serialize(eth(t), gopacket.Payload(bytes.Join(rest, nil)))
}

func f(b []byte) frame { return frame{data: b} }

func mpls() []frame {
	label := func(l uint32, bottom bool) *layers.MPLS {
		return &layers.MPLS{Label: l, TTL: 64, StackBottom: bottom}
	}
	return []frame{
		// One label, IPv4.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(100, true), gopacket.Payload(ip(v4(40001, 80))))),
		// Three labels, IPv6.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(100, false), label(200, false), label(300, true), gopacket.Payload(ip(v6(40002, 443))))),
		// The multicast EtherType.
		f(serialize(eth(layers.EthernetTypeMPLSMulticast), label(16, true), gopacket.Payload(ip(v4(40003, 80))))),
		// IPv4 explicit null and IPv6 explicit null labels.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(0, true), gopacket.Payload(ip(v4(40004, 80))))),
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(2, true), gopacket.Payload(ip(v6(40005, 80))))),
		// Inside an 802.1Q tag, and inside QinQ.
		f(serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeMPLSUnicast},
			label(1000, false), label(2000, true), gopacket.Payload(ip(v4(40006, 8080))))),
		f(serialize(eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 30, Type: layers.EthernetTypeMPLSUnicast}, label(1000, true), gopacket.Payload(ip(v6(40007, 8080))))),
		// A pseudowire control word after the stack (first nibble 0): an
		// Ethernet pseudowire, not an IP packet in the first network layer.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(500, true), gopacket.Payload(append([]byte{0, 0, 0, 0}, ethRaw(layers.EthernetTypeIPv4, ip(v4(40008, 80)))...)))),
		// The GAL (13) and OAM alert (14) labels at the bottom, then IPv4.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(100, false), label(13, true), gopacket.Payload(ip(v4(40009, 80))))),
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(14, true), gopacket.Payload(ip(v4(40019, 80))))),
		// The same labels higher in the stack.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(14, false), label(100, true), gopacket.Payload(ip(v4(40039, 80))))),
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(13, false), label(100, true), gopacket.Payload(ip(v4(40049, 80))))),
		// Segmentation offload under a label: the IPv4 total length is 0.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), label(100, true), gopacket.Payload(offloaded(v4(40029, 80), 1800)))),
		// A stack cut before its bottom label.
		f(serialize(eth(layers.EthernetTypeMPLSUnicast), gopacket.Payload([]byte{0, 0x06, 0x40, 0x40}))),
	}
}

func pppoe() []frame {
	sess := func(s tcpSpec, proto layers.PPPType) []gopacket.SerializableLayer {
		return []gopacket.SerializableLayer{
			&layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x1234},
			&layers.PPP{PPPType: proto},
			gopacket.Payload(ip(s)),
		}
	}
	withEth := func(t layers.EthernetType, pre []gopacket.SerializableLayer, rest []gopacket.SerializableLayer) []byte {
		return serialize(append(append([]gopacket.SerializableLayer{eth(t)}, pre...), rest...)...)
	}
	small := v4(40013, 80)
	small.payload = 0
	// PPP with a compressed (one-byte) protocol field, by hand.
	pfc := ethRaw(layers.EthernetTypePPPoESession, []byte{0x11, 0, 0x12, 0x34, 0, 41}, []byte{0x21}, ip(v4(40014, 80)))
	return []frame{
		f(withEth(layers.EthernetTypePPPoESession, nil, sess(v4(40010, 80), layers.PPPTypeIPv4))),
		f(withEth(layers.EthernetTypePPPoESession, nil, sess(v6(40011, 443), layers.PPPTypeIPv6))),
		// Inside QinQ (802.1ad outer tag, 802.1Q inner tag).
		f(withEth(layers.EthernetTypeQinQ, []gopacket.SerializableLayer{
			&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypePPPoESession},
		}, sess(v4(40012, 80), layers.PPPTypeIPv4))),
		// A short frame: Ethernet padding after the PPPoE payload.
		f(withEth(layers.EthernetTypePPPoESession, nil, sess(small, layers.PPPTypeIPv4))),
		f(pfc),
		// Segmentation offload: the IPv4 total length is 0, and the PPPoE
		// length is the frame's, then shorter than the frame.
		f(withEth(layers.EthernetTypePPPoESession, nil, []gopacket.SerializableLayer{
			&layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x1234},
			&layers.PPP{PPPType: layers.PPPTypeIPv4}, gopacket.Payload(offloaded(v4(40015, 80), 1800))})),
		f(pppoeLen(withEth(layers.EthernetTypePPPoESession, nil, []gopacket.SerializableLayer{
			&layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x1234},
			&layers.PPP{PPPType: layers.PPPTypeIPv4}, gopacket.Payload(offloaded(v4(40016, 80), 1800))}), 1000)),
		// A PPPoE length of 0, and one past the end of the frame.
		f(pppoeLen(withEth(layers.EthernetTypePPPoESession, nil, sess(v4(40017, 80), layers.PPPTypeIPv4)), 0)),
		f(pppoeLen(withEth(layers.EthernetTypePPPoESession, nil, sess(v4(40018, 80), layers.PPPTypeIPv4)), 1400)),
		// MPLS in PPP.
		f(ethRaw(layers.EthernetTypePPPoESession, []byte{0x11, 0, 0x12, 0x34, 0, 56, 0x02, 0x81, 0, 0x06, 0x41, 0x40}, ip(v4(40028, 80)))),
		// LCP, and a discovery frame: not IP.
		f(ethRaw(layers.EthernetTypePPPoESession, []byte{0x11, 0, 0x12, 0x34, 0, 6}, []byte{0xc0, 0x21, 1, 1, 0, 4})),
		f(ethRaw(layers.EthernetTypePPPoEDiscovery, []byte{0x11, 0x09, 0, 0, 0, 0})),
	}
}

func llcSNAP() []frame {
	snapRaw := func(oui [3]byte, t layers.EthernetType, p []byte) []gopacket.SerializableLayer {
		return []gopacket.SerializableLayer{
			&layers.LLC{DSAP: 0xaa, SSAP: 0xaa, Control: 3},
			&layers.SNAP{OrganizationalCode: oui[:], Type: t},
			gopacket.Payload(p),
		}
	}
	snap := func(oui [3]byte, s tcpSpec) []gopacket.SerializableLayer { return snapRaw(oui, etherType(s), ip(s)) }
	e802 := func(pre []gopacket.SerializableLayer, rest []gopacket.SerializableLayer) []byte {
		return serialize(append(append([]gopacket.SerializableLayer{eth(layers.EthernetTypeLLC)}, pre...), rest...)...)
	}
	small := v4(40024, 80)
	small.payload = 0
	// IP straight over LLC (SAP 0x06), by hand: the length counts LLC and IP.
	ipv4 := ip(v4(40025, 80))
	llcIP := append([]byte{0x06, 0x06, 0x03}, ipv4...)
	direct := append(append(append([]byte{}, macB...), macA...), byte(len(llcIP)>>8), byte(len(llcIP)))
	direct = append(direct, llcIP...)
	// 802.3 inside an 802.1Q tag.
	tagged := serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 5, Type: layers.EthernetType(8 + len(ip(v6(40023, 80))))},
		&layers.LLC{DSAP: 0xaa, SSAP: 0xaa, Control: 3}, &layers.SNAP{OrganizationalCode: []byte{0, 0, 0}, Type: layers.EthernetTypeIPv6},
		gopacket.Payload(ip(v6(40023, 80))))
	return []frame{
		f(e802(nil, snap([3]byte{}, v4(40020, 80)))),
		f(e802(nil, snap([3]byte{}, v6(40021, 443)))),
		// Cisco's OUI also carries an EtherType.
		f(e802(nil, snap([3]byte{0, 0, 0xf8}, v4(40022, 80)))),
		f(tagged),
		// Padding after the length.
		f(e802(nil, snap([3]byte{}, small))),
		f(direct),
		// Another OUI: its type is not an EtherType.
		f(e802(nil, snap([3]byte{0x00, 0x00, 0x0c}, v4(40026, 80)))),
		// Segmentation offload: the IPv4 total length is 0 and the 802.3
		// length ends before the frame does.
		f(e802len(e802(nil, snapRaw([3]byte{}, layers.EthernetTypeIPv4, offloaded(v4(40027, 80), 1400))), 1000)),
		// A Cisco ISL destination (01-00-0C-00-00-xx) before the 802.3
		// length: tshark reads ISL there, not LLC.
		f(func() []byte {
			b := e802(nil, snap([3]byte{}, v4(40018, 80)))
			copy(b, []byte{0x01, 0x00, 0x0c, 0x00, 0x00, 0x00})
			return b
		}()),
		// STP (LLC 0x42): not IP.
		f(e802(nil, []gopacket.SerializableLayer{&layers.LLC{DSAP: 0x42, SSAP: 0x42, Control: 3}, gopacket.Payload(make([]byte, 35))})),
	}
}

// pbb is 802.1ah: a B-tag, the I-tag (EtherType 0x88e7, 4 bytes: flags and
// the 24-bit I-SID), then the customer's addresses and EtherType.
func pbb() []frame {
	itag := func(isid uint32, inner ...[]byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, isid&0xffffff)
		b = append(b, macB...)
		b = append(b, macA...)
		return append(b, bytes.Join(inner, nil)...)
	}
	et := func(t uint16) []byte { return binary.BigEndian.AppendUint16(nil, t) }
	return []frame{
		f(serialize(eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 7, Type: 0x88e7},
			gopacket.Payload(itag(0x10001, et(0x0800), ip(v4(40030, 80)))))),
		f(ethRaw(0x88e7, itag(0x10002, et(0x86dd), ip(v6(40031, 443))))),
		// A customer VLAN tag inside.
		f(ethRaw(0x88e7, itag(0x10003, et(0x8100), []byte{0, 9}, et(0x0800), ip(v4(40032, 8080))))),
		// ARP inside: not IP.
		f(ethRaw(0x88e7, itag(0x10004, et(0x0806), make([]byte, 28)))),
	}
}

// nflog is LINKTYPE_NFLOG: family, version, resource id, then TLVs of
// (length, type) in the capturing host's byte order (little-endian here),
// each padded to 4 bytes; NFULA_PAYLOAD (9) holds the IP packet.
func nflog() []frame {
	tlv := func(typ uint16, v []byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, uint16(4+len(v)))
		b = binary.LittleEndian.AppendUint16(b, typ)
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	msg := func(fam byte, tlvs ...[]byte) []byte {
		return append([]byte{fam, 0, 0, 5}, bytes.Join(tlvs, nil)...)
	}
	hdr := tlv(1, []byte{0x08, 0x00, 3, 0}) // NFULA_PACKET_HDR: hw protocol, hook
	prefix := tlv(10, []byte("connpipe test\x00"))
	odd := v4(40042, 80)
	odd.payload = 3 // a payload TLV whose length is not a multiple of 4
	return []frame{
		f(msg(2, hdr, prefix, tlv(9, ip(v4(40040, 80))))),
		f(msg(10, tlv(1, []byte{0x86, 0xdd, 3, 0}), tlv(11, []byte{0xe8, 3, 0, 0}), tlv(9, ip(v6(40041, 443))))),
		// The family says IPv6 and the packet is IPv6, but the packet
		// header says IPv4: tshark goes by the header (its IPv4
		// dissector finds version 6), so this is no TCP packet.
		f(msg(10, hdr, tlv(9, ip(v6(40044, 443))))),
		// No packet header: the family tells the protocol.
		f(msg(10, tlv(9, ip(v6(40045, 443))))),
		f(msg(2, tlv(9, ip(odd)), tlv(11, []byte{0xe8, 3, 0, 0}))),
		// Segmentation offload: IPv4 total length 0 in a payload TLV,
		// with a TLV after it.
		f(msg(2, hdr, tlv(9, offloaded(v4(40043, 80), 1800)), tlv(11, []byte{0xe8, 3, 0, 0}))),
		// No payload TLV: nothing to record.
		f(msg(2, hdr, prefix)),
	}
}

// ipoib is LINKTYPE_IPOIB as tshark reads it: a 40-byte pseudo header
// (the GRH, or zeros and the destination GID), then the 4-byte IPoIB
// header (EtherType, reserved).
func ipoib() []frame {
	grh := func(t uint16, p []byte) []byte {
		b := make([]byte, 40)
		copy(b[24:], v6b.To16())
		b = binary.BigEndian.AppendUint16(b, t)
		b = append(b, 0, 0)
		return append(b, p...)
	}
	return []frame{
		f(grh(0x0800, ip(v4(40050, 80)))),
		f(grh(0x86dd, ip(v6(40051, 443)))),
		f(grh(0x0806, make([]byte, 28))),
	}
}

// arcnet builds BSD (linktype 7) or Linux (129) ARCnet frames: source and
// destination ids, the Linux offset field, the protocol id, and for RFC 1201
// the split flag and sequence number (BSD may add an exception header).
func arcnet(linux bool) []frame {
	hdr := func(proto byte, rest ...[]byte) []byte {
		b := []byte{0x01, 0x02}
		if linux {
			b = append(b, 0, 0)
		}
		b = append(b, proto)
		return append(b, bytes.Join(rest, nil)...)
	}
	fs := []frame{
		f(hdr(0xf0, ip(v4(40060, 80)))),                   // RFC 1051 IP
		f(hdr(0xd4, []byte{0, 0, 1}, ip(v4(40061, 80)))),  // RFC 1201 IP: split flag 0, sequence 1
		f(hdr(0xc4, []byte{0, 0, 2}, ip(v6(40062, 443)))), // RFC 2497 IPv6
		f(hdr(0xd5, []byte{0, 0, 3}, make([]byte, 28))),   // RFC 1201 ARP: not IP
	}
	if linux {
		// Linux hides exception frames: 0xff is just a split flag.
		fs = append(fs, f(hdr(0xd4, []byte{0xff, 0, 4}, ip(v4(40063, 80)))))
	} else {
		// An exception frame: 0xff, two bytes of padding, the protocol
		// id again, then the real split flag and sequence.
		fs = append(fs, f(hdr(0xd4, []byte{0xff, 0xff, 0xff, 0xd4, 0, 0, 4}, ip(v4(40063, 80)))))
	}
	return fs
}

// cooked builds Linux cooked frames (SLL, or SLL2) whose protocol field is
// not an EtherType, or whose hardware type says the payload is not what
// the EtherType says.
func cooked(v2 bool) []frame {
	hdr := func(hatype, proto uint16, p ...[]byte) []byte {
		var b []byte
		if v2 {
			b = binary.BigEndian.AppendUint16(b, proto)
			b = append(b, 0, 0, 0, 0, 0, 3)
			b = binary.BigEndian.AppendUint16(b, hatype)
			b = append(b, 0, 6)
			b = append(b, macA...)
			b = append(b, 0, 0)
		} else {
			b = []byte{0, 0}
			b = binary.BigEndian.AppendUint16(b, hatype)
			b = append(b, 0, 6)
			b = append(b, macA...)
			b = append(b, 0, 0)
			b = binary.BigEndian.AppendUint16(b, proto)
		}
		return append(b, bytes.Join(p, nil)...)
	}
	snap := func(t uint16) []byte { return binary.BigEndian.AppendUint16([]byte{0xaa, 0xaa, 3, 0, 0, 0}, t) }
	return []frame{
		f(hdr(1, 0x0800, ip(v4(40100, 80)))),
		// Protocol 4: an 802.2 LLC frame follows.
		f(hdr(1, 4, snap(0x0800), ip(v4(40101, 80)))),
		f(hdr(1, 4, snap(0x86dd), ip(v6(40102, 443)))),
		// Protocol 1: Novell raw 802.3.
		f(hdr(1, 1, []byte{0xff, 0xff}, ip(v4(40103, 80)))),
		// MPLS and PPPoE under the cooked header.
		f(hdr(1, 0x8847, []byte{0, 0x06, 0x41, 0x40}, ip(v4(40104, 80)))),
		f(hdr(1, 0x8864, []byte{0x11, 0, 0, 1, 0, 42, 0, 0x21}, ip(v4(40105, 80)))),
		// A GRE tunnel device (ARPHRD_IPGRE) and a netlink socket
		// (ARPHRD_NETLINK): the protocol is not the payload's EtherType.
		f(hdr(778, 0x0800, ip(v4(40106, 80)))),
		f(hdr(824, 0x0800, ip(v4(40107, 80)))),
		// Protocol 7: PPP in HDLC framing.
		f(hdr(512, 7, []byte{0xff, 0x03, 0, 0x21}, ip(v4(40108, 80)))),
	}
}

// null builds BSD loopback (DLT_NULL) frames: a 4-byte family in the
// capturing host's byte order, which tshark also reads as an EtherType when
// it is larger than an 802.3 length, or PPP's address and control bytes.
func null() []frame {
	fam := func(order binary.ByteOrder, v uint32, p []byte) frame {
		b := make([]byte, 4)
		order.PutUint32(b, v)
		return f(append(b, p...))
	}
	le, be := binary.LittleEndian, binary.BigEndian
	return []frame{
		fam(le, 2, ip(v4(40110, 80))),
		fam(be, 2, ip(v4(40111, 80))),
		fam(le, 24, ip(v6(40112, 443))),
		fam(be, 28, ip(v6(40113, 443))),
		fam(le, 30, ip(v6(40114, 443))),
		fam(le, 10, ip(v6(40115, 443))), // Linux's AF_INET6: not a BSD family
		fam(le, 23, ip(v6(40116, 443))),
		fam(be, 0x0800, ip(v4(40117, 80))),
		fam(le, 0x0800, ip(v4(40118, 80))),
		fam(be, 0x86dd, ip(v6(40119, 443))),
		f(append([]byte{0xff, 0x03, 0x00, 0x21}, ip(v4(40120, 80))...)),
		fam(le, 7, ip(v4(40121, 80))),
	}
}

// loop builds OpenBSD loopback (DLT_LOOP) frames: the family is
// big-endian; tshark reads nothing else there.
func loop() []frame {
	fam := func(order binary.ByteOrder, v uint32, p []byte) frame {
		b := make([]byte, 4)
		order.PutUint32(b, v)
		return f(append(b, p...))
	}
	le, be := binary.LittleEndian, binary.BigEndian
	return []frame{
		fam(be, 2, ip(v4(40130, 80))),
		fam(be, 24, ip(v6(40131, 443))),
		fam(be, 30, ip(v6(40132, 443))),
		fam(le, 2, ip(v4(40133, 80))),
		fam(le, 28, ip(v6(40134, 443))),
		fam(be, 0x0800, ip(v4(40135, 80))),
		f(append([]byte{0xff, 0x03, 0x00, 0x21}, ip(v4(40136, 80))...)),
	}
}

// raw builds raw IP frames, and the PPP framings tshark also finds under
// LINKTYPE_RAW (not under LINKTYPE_IPV4, where every frame is IPv4).
func raw() []frame {
	return []frame{
		f(ip(v4(40140, 80))),
		f(ip(v6(40141, 443))),
		f(append([]byte{0xff, 0x03, 0x00, 0x21}, ip(v4(40142, 80))...)),
		f(append([]byte{0, 0, 0, 0, 0, 0, 0xff, 0x03, 0x00, 0x57}, ip(v6(40143, 443))...)),
		f(append([]byte{0x0f, 0x00, 0x08, 0x00}, ip(v4(40144, 80))...)), // Cisco HDLC: not read
	}
}

// offloaded returns s with payload bytes as a segmentation-offloaded IPv4 packet:
// total length 0, checksum left to the NIC.
func offloaded(s tcpSpec, payload int) []byte {
	s.payload = payload
	b := ip(s)
	binary.BigEndian.PutUint16(b[2:], 0)
	b[10], b[11] = 0, 0
	return b
}

// pppoeLen sets the PPPoE length of an Ethernet frame to n.
func pppoeLen(b []byte, n uint16) []byte {
	binary.BigEndian.PutUint16(b[14+4:], n)
	return b
}

// e802len sets the 802.3 length of an Ethernet frame to n.
func e802len(b []byte, n uint16) []byte {
	binary.BigEndian.PutUint16(b[12:], n)
	return b
}

// offload holds packets captured on a sender that segments in the NIC or
// with big TCP, whose IP lengths do not describe the frame.
func offload() []frame {
	big := v4(40070, 80)
	big.payload = 3000
	tso := ip(big)
	binary.BigEndian.PutUint16(tso[2:], 0)
	tso[10], tso[11] = 0, 0 // the checksum is left to the NIC
	bigTagged := v4(40071, 80)
	bigTagged.payload = 2000
	tsoTagged := ip(bigTagged)
	binary.BigEndian.PutUint16(tsoTagged[2:], 0)
	snapped := v4(40072, 80)
	snapped.payload = 9000
	tsoSnapped := ethRaw(layers.EthernetTypeIPv4, ip(snapped))
	binary.BigEndian.PutUint16(tsoSnapped[14+2:], 0)
	long := ip(v4(40073, 80))
	binary.BigEndian.PutUint16(long[2:], 1500) // more than the frame holds
	// IPv6 big TCP: payload length 0 and a hop-by-hop header with a jumbo
	// payload option (RFC 2675) holding the real length.
	jumbo := ip(tcpSpec{v6: true, sport: 40074, dport: 443, flags: 0x10, payload: 4000})
	seg := append([]byte{}, jumbo[40:]...)
	hbh := []byte{6, 0, 0xc2, 4}
	hbh = binary.BigEndian.AppendUint32(hbh, uint32(8+len(seg)))
	j := append(append([]byte{}, jumbo[:40]...), hbh...)
	j = append(j, seg...)
	binary.BigEndian.PutUint16(j[4:], 0)
	j[6] = 0
	// IPv6 with payload length 0 and no jumbo option.
	zero6 := ip(v6(40075, 443))
	binary.BigEndian.PutUint16(zero6[4:], 0)
	long6 := ip(v6(40076, 443))
	binary.BigEndian.PutUint16(long6[4:], 1400)
	// A total length inside the IP header: not an IP packet tshark reads.
	bogus := ip(v4(40077, 80))
	binary.BigEndian.PutUint16(bogus[2:], 12)
	// A total length that ends inside the TCP header.
	short := ip(v4(40078, 80))
	binary.BigEndian.PutUint16(short[2:], 30)
	return []frame{
		f(ethRaw(layers.EthernetTypeIPv4, tso)),
		f(serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 3, Type: layers.EthernetTypeIPv4}, gopacket.Payload(tsoTagged))),
		{data: tsoSnapped[:128], wire: len(tsoSnapped)},
		f(ethRaw(layers.EthernetTypeIPv4, long)),
		f(ethRaw(layers.EthernetTypeIPv6, j)),
		f(ethRaw(layers.EthernetTypeIPv6, zero6)),
		f(ethRaw(layers.EthernetTypeIPv6, long6)),
		f(ethRaw(layers.EthernetTypeIPv4, bogus)),
		f(ethRaw(layers.EthernetTypeIPv4, short)),
	}
}

// oddTCP holds TCP headers that look odd but are still TCP packets sent to
// a port, and two that are not whole.
func oddTCP() []frame {
	e := func(s tcpSpec) frame { return f(ethRaw(etherType(s), ip(s))) }
	return []frame{
		e(tcpSpec{sport: 0, dport: 80, flags: 0x02}),
		e(tcpSpec{sport: 40080, dport: 0, flags: 0x02}),
		e(tcpSpec{v6: true, sport: 0, dport: 0, flags: 0x04}),
		e(tcpSpec{sport: 40081, dport: 80, flags: 0}),                 // no flag at all
		e(tcpSpec{sport: 40082, dport: 80, flags: 0x1ff}),             // every flag, NS included
		e(tcpSpec{sport: 40083, dport: 80, flags: 0x03}),              // SYN+FIN
		e(tcpSpec{sport: 40084, dport: 80, flags: 0x12, reserved: 7}), // reserved bits set
		e(tcpSpec{v6: true, sport: 40085, dport: 80, flags: 0x1c2, reserved: 1}),
		e(tcpSpec{sport: 40086, dport: 80, flags: 0x10, dataOffset: 4}), // data offset below 5
		e(tcpSpec{sport: 40087, dport: 80, flags: 0x10, dataOffset: 15}),
	}
}

// timestamps holds fractions of a second at and past one second.
func timestamps(nano bool) []frame {
	// The first records are ordinary, so that tshark's probing of the pcap
	// variant (which scores out-of-range fractions) settles on the standard
	// one.
	fracs := []uint32{123456, 999999, 1000000, 1500000, 2999999, 4294967, 4294968, 4294967295}
	if nano {
		fracs = []uint32{123456789, 999999999, 1000000000, 1500000000, 2999999999, 4294967295}
	}
	var fs []frame
	for i, fr := range fracs {
		fs = append(fs, frame{data: ip(v4(uint16(40090+i), 80)), sec: uint32(base + 10*i), frac: fr})
	}
	return fs
}

func writePcap(c capture) []byte {
	var b []byte
	magic := uint32(0xa1b2c3d4)
	if c.nano {
		magic = 0xa1b23c4d
	}
	le := binary.LittleEndian
	b = le.AppendUint32(b, magic)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 262144)
	b = le.AppendUint32(b, c.link)
	for _, f := range c.frames {
		wire := max(f.wire, len(f.data))
		b = le.AppendUint32(b, f.sec)
		b = le.AppendUint32(b, f.frac)
		b = le.AppendUint32(b, uint32(len(f.data)))
		b = le.AppendUint32(b, uint32(wire))
		b = append(b, f.data...)
	}
	return b
}

// writePcapng writes fs with gopacket's pcapng writer, one interface per
// link type, with microsecond timestamps.
func writePcapng(fs []frame) []byte {
	var out bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&out, pcapgo.NgInterface{LinkType: layers.LinkType(fs[0].link), SnapLength: 262144, TimestampResolution: 6},
		pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "connpipe crafted captures"}})
	if err != nil {
		log.Fatal(err)
	}
	ifaces := map[uint32]int{fs[0].link: 0}
	for _, f := range fs {
		id, ok := ifaces[f.link]
		if !ok {
			id, err = w.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkType(f.link), SnapLength: 262144, TimestampResolution: 6})
			if err != nil {
				log.Fatal(err)
			}
			ifaces[f.link] = id
		}
		ci := gopacket.CaptureInfo{
			Timestamp:      time.Unix(int64(f.sec), int64(f.frac)*1000).UTC(),
			CaptureLength:  len(f.data),
			Length:         max(f.wire, len(f.data)),
			InterfaceIndex: id,
		}
		if err := w.WritePacket(ci, f.data); err != nil {
			log.Fatal(fmt.Errorf("frame %d: %w", len(out.Bytes()), err))
		}
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	return out.Bytes()
}

// writePcapngRaw writes fs as a little-endian pcapng file with one
// interface of link type link, microsecond timestamps.
func writePcapngRaw(link uint16, fs []frame) []byte {
	le := binary.LittleEndian
	block := func(typ uint32, body []byte) []byte {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		n := uint32(12 + len(body))
		b := le.AppendUint32(nil, typ)
		b = le.AppendUint32(b, n)
		b = append(b, body...)
		return le.AppendUint32(b, n)
	}
	shb := le.AppendUint32(nil, 0x1a2b3c4d)
	shb = le.AppendUint16(shb, 1)
	shb = le.AppendUint16(shb, 0)
	shb = le.AppendUint64(shb, ^uint64(0))
	out := block(0x0a0d0d0a, shb)
	idb := le.AppendUint16(nil, link)
	idb = le.AppendUint16(idb, 0)
	idb = le.AppendUint32(idb, 262144)
	out = append(out, block(1, idb)...)
	for _, f := range fs {
		ts := uint64(f.sec)*1000000 + uint64(f.frac)
		epb := le.AppendUint32(nil, 0)
		epb = le.AppendUint32(epb, uint32(ts>>32))
		epb = le.AppendUint32(epb, uint32(ts))
		epb = le.AppendUint32(epb, uint32(len(f.data)))
		epb = le.AppendUint32(epb, uint32(max(f.wire, len(f.data))))
		epb = append(epb, f.data...)
		out = append(out, block(6, epb)...)
	}
	return out
}

// fddi holds FDDI frames (LINKTYPE_FDDI), which only gopacket's decoders
// know: LLC/SNAP with IPv4 and IPv6, and ARP (not IP).
func fddi() []frame {
	hdr := func() []byte {
		// Frame control 0x50 (LLC, asynchronous), destination, source.
		return append([]byte{0x50}, append(append([]byte{}, macB...), macA...)...)
	}
	snap := func(et layers.EthernetType, b []byte) []byte {
		h := append(hdr(), 0xaa, 0xaa, 0x03, 0, 0, 0)
		h = binary.BigEndian.AppendUint16(h, uint16(et))
		return append(h, b...)
	}
	arp := serialize(&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: 1, SourceHwAddress: macA, SourceProtAddress: v4a, DstHwAddress: make([]byte, 6), DstProtAddress: v4b})
	return []frame{
		f(snap(layers.EthernetTypeIPv4, ip(v4(41000, 80)))),
		f(snap(layers.EthernetTypeIPv6, ip(v6(41001, 443)))),
		f(snap(layers.EthernetTypeARP, arp)),
		f(snap(layers.EthernetTypeIPv4, ip(tcpSpec{sport: 41002, dport: 8080, flags: 0x11}))),
	}
}

// pppHDLC holds PPP in HDLC-like framing (LINKTYPE_PPP_HDLC, RFC 1662):
// address and control bytes, then the protocol, with IPv4, IPv6 and LCP
// (not IP).
func pppHDLC() []frame {
	return []frame{
		f(append([]byte{0xff, 0x03, 0x00, 0x21}, ip(v4(42000, 80))...)),
		f(append([]byte{0xff, 0x03, 0x00, 0x57}, ip(v6(42001, 443))...)),
		f([]byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04}),
		f(append([]byte{0xff, 0x03, 0x00, 0x21}, ip(tcpSpec{sport: 42002, dport: 22, flags: 0x02})...)),
	}
}

// Mirror mode's addresses: a mirror source sends tunnels to the target;
// inside, clients send to the watched address 10.9.0.80:80 and elsewhere.
var (
	tunSrc   = net.IP{192, 0, 2, 1}
	tunDst   = net.IP{192, 0, 2, 2}
	tunSrc6  = net.ParseIP("2001:db8:ff::1")
	tunDst6  = net.ParseIP("2001:db8:ff::2")
	client   = net.IP{10, 9, 0, 5}
	watched  = net.IP{10, 9, 0, 80}
	other    = net.IP{10, 9, 0, 81}
	client6  = net.ParseIP("2001:db8:9::5")
	watched6 = net.ParseIP("2001:db8:9::80")
)

// innerEth is the mirrored Ethernet frame of a TCP packet from client.
func innerEth(dst net.IP, dport uint16, flags uint16) []byte {
	s := tcpSpec{sport: 50000 + dport%1000, dport: dport, flags: flags, payload: 8, src: client, dst: dst}
	if dst.To4() == nil {
		s.v6, s.src = true, client6
	}
	return ethRaw(etherType(s), ip(s))
}

// outer wraps a tunnel's bytes in Ethernet and IPv4 (IPv6 when v6) from
// the mirror source to the target, over UDP to port when port is set,
// else over GRE.
func outer(v6 bool, port uint16, tunnel []byte) []byte {
	var l []gopacket.SerializableLayer
	proto := layers.IPProtocolGRE
	if port != 0 {
		proto = layers.IPProtocolUDP
	}
	var nl gopacket.NetworkLayer
	if v6 {
		h := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: tunSrc6, DstIP: tunDst6}
		nl, l = h, append(l, eth(layers.EthernetTypeIPv6), h)
	} else {
		h := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: tunSrc, DstIP: tunDst}
		nl, l = h, append(l, eth(layers.EthernetTypeIPv4), h)
	}
	if port != 0 {
		u := &layers.UDP{SrcPort: 54321, DstPort: layers.UDPPort(port)}
		_ = u.SetNetworkLayerForChecksum(nl)
		l = append(l, u)
	}
	return serialize(append(l, gopacket.Payload(tunnel))...)
}

// vxlanHdr is a VXLAN header (RFC 7348) with the VNI flag.
func vxlanHdr(vni uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0x08, 0, 0, 0}, vni<<8)
}

// geneveHdr is a Geneve header (RFC 8926) carrying Ethernet, with one
// 8-byte option when opt is set.
func geneveHdr(vni uint32, opt bool) []byte {
	h := []byte{0, 0, 0x65, 0x58}
	if opt {
		h[0] = 2 // options length in 4-byte words
	}
	h = binary.BigEndian.AppendUint32(h, vni<<8)
	if opt {
		h = append(h, 0x01, 0x08, 0x01, 0x01, 0xde, 0xad, 0xbe, 0xef)
	}
	return h
}

// greHdr is a GRE header: the key and sequence number when given (>= 0).
func greHdr(proto layers.EthernetType, key, seq int64) []byte {
	g := &layers.GRE{Protocol: proto, KeyPresent: key >= 0, SeqPresent: seq >= 0}
	if key >= 0 {
		g.Key = uint32(key)
	}
	if seq >= 0 {
		g.Seq = uint32(seq)
	}
	return serialize(g)
}

// erspan2Hdr is an ERSPAN type II header with gopacket's layer.
func erspan2Hdr(session uint16) []byte {
	return serialize(&layers.ERSPANII{Version: layers.ERSPANIIVersion, SessionID: session, Index: 1})
}

// erspan3Hdr is an ERSPAN type III header (draft-foschiano-erspan-03,
// section 4.3): version 2, the session, a timestamp, and the O flag with
// the 8-byte platform-specific subheader when sub is set.
func erspan3Hdr(session uint16, sub bool) []byte {
	h := binary.BigEndian.AppendUint16(nil, 2<<12|10)   // version, VLAN
	h = binary.BigEndian.AppendUint16(h, session&0x3ff) // COS, BSO, T, session
	h = binary.BigEndian.AppendUint32(h, 123456)        // timestamp
	h = binary.BigEndian.AppendUint16(h, 0)             // SGT
	last := uint16(0)
	if sub {
		last |= 1
	}
	h = binary.BigEndian.AppendUint16(h, last) // P, FT, HW ID, D, Gra, O
	if sub {
		h = append(h, 0x08, 0, 0, 0, 0, 0, 0, 0) // platform id 1
	}
	return h
}

// mirrorFrames holds TCP inside VXLAN, Geneve, GRE (transparent Ethernet
// bridging and IP) and ERSPAN types I, II and III, to the watched address
// and to others, among plain frames and tunnels that are not whole.
func mirrorFrames() []frame {
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	vlan := serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
		gopacket.Payload(ip(tcpSpec{sport: 50123, dport: 80, flags: 0x10, payload: 4, src: client, dst: watched})))
	arp := ethRaw(layers.EthernetTypeARP, serialize(&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: 1, SourceHwAddress: macA, SourceProtAddress: client,
		DstHwAddress: make([]byte, 6), DstProtAddress: watched}))
	inner4 := ip(tcpSpec{sport: 50200, dport: 80, flags: 0x02, src: client, dst: watched})
	return []frame{
		f(outer(false, 4789, cat(vxlanHdr(100), innerEth(watched, 80, 0x02)))),
		f(outer(false, 4789, cat(vxlanHdr(100), innerEth(other, 80, 0x02)))),
		f(outer(false, 4789, cat(vxlanHdr(100), innerEth(watched, 443, 0x02)))),
		f(outer(false, 4789, cat(vxlanHdr(200), innerEth(watched, 80, 0x10)))),
		f(outer(false, 4789, cat(vxlanHdr(100), innerEth(watched6, 80, 0x18)))),
		f(outer(false, 4789, cat(vxlanHdr(100), arp))),
		f(outer(true, 4789, cat(vxlanHdr(100), innerEth(watched, 80, 0x11)))),
		f(outer(false, 6081, cat(geneveHdr(300, true), innerEth(watched, 80, 0x02)))),
		f(outer(false, 6081, cat(geneveHdr(300, false), innerEth(other, 22, 0x02)))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeTransparentEthernetBridging, 42, -1), innerEth(watched, 80, 0x18)))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeTransparentEthernetBridging, -1, -1), innerEth(other, 80, 0x18)))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeIPv4, -1, -1), inner4))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeERSPAN, -1, -1), innerEth(watched, 80, 0x04)))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeERSPAN, -1, 1), erspan2Hdr(5), vlan))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeERSPAN, -1, 2), erspan2Hdr(6), innerEth(other, 80, 0x10)))),
		f(outer(false, 0, cat(greHdr(0x22eb, -1, 3), erspan3Hdr(7, true), innerEth(watched, 80, 0x10)))),
		f(outer(false, 0, cat(greHdr(0x22eb, -1, 4), erspan3Hdr(7, false), innerEth(watched, 80, 0x01)))),
		f(ethRaw(layers.EthernetTypeIPv4, ip(tcpSpec{sport: 50300, dport: 80, flags: 0x02, src: client, dst: watched}))),
		f(outer(false, 4789, []byte{0x08, 0, 0})),
		f(outer(false, 53, []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})),
		f(outer(false, 6081, cat([]byte{0x3f, 0, 0x65, 0x58, 0, 0x01, 0x2c, 0}, innerEth(watched, 80, 0x02)))),
		f(outer(false, 0, cat(greHdr(layers.EthernetTypeERSPAN, -1, 5), []byte{0x10, 0}))),
	}
}
