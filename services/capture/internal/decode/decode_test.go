package decode_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	v4a, v4b = netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	v6a, v6b = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
)

func tcp4() samples.Spec {
	return samples.Spec{Src: v4a, Dst: v4b, SrcPort: 40000, DstPort: 80, Flags: 0x012}
}

func tcp6() samples.Spec {
	return samples.Spec{Src: v6a, Dst: v6b, SrcPort: 40000, DstPort: 80, Flags: 0x102}
}

func with(s samples.Spec, f func(*samples.Spec)) samples.Spec { f(&s); return s }

// cut returns b without its last n bytes.
func cut(b []byte, n int) []byte { return b[:len(b)-n] }

func prefix(p []byte, b []byte) []byte { return append(append([]byte{}, p...), b...) }

func TestDecode(t *testing.T) {
	eth4, eth6 := samples.Ethernet(tcp4()), samples.Ethernet(tcp6())
	ip4, ip6 := samples.IP(tcp4()), samples.IP(tcp6())
	sll := func(proto uint16, b []byte) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[14:], proto)
		return prefix(h, b)
	}
	sll2 := func(proto uint16, b []byte) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], proto)
		return prefix(h, b)
	}
	padded := append(append([]byte{}, eth4...), make([]byte, 6)...) // Ethernet padding
	badOffset := append([]byte{}, eth4...)
	badOffset[14+20+12] = 4 << 4
	badVersion := append([]byte{}, eth4...)
	badVersion[14] = 6<<4 | 5
	shortTotal := append([]byte{}, eth4...)
	binary.BigEndian.PutUint16(shortTotal[14+2:], 30) // total length ends inside the TCP header
	// An ICMP error quoting a TCP header is not a TCP packet.
	icmp := samples.IP(with(tcp4(), func(s *samples.Spec) { s.Proto = 1 }))
	icmp = append(icmp, ip4...)

	tests := []struct {
		name  string
		link  decode.LinkType
		frame []byte
		want  decode.Status
		ipLen uint32
	}{
		{"ethernet ipv4", decode.LinkEthernet, eth4, decode.StatusOK, 40},
		{"ethernet ipv4 options", decode.LinkEthernet, samples.Ethernet(with(tcp4(), func(s *samples.Spec) { s.IPOptions = 12 })), decode.StatusOK, 52},
		{"ethernet ipv4 padding", decode.LinkEthernet, padded, decode.StatusOK, 40},
		{"ethernet ipv6", decode.LinkEthernet, eth6, decode.StatusOK, 60},
		{"vlan", decode.LinkEthernet, samples.Ethernet(with(tcp4(), func(s *samples.Spec) { s.Tags = []uint16{0x8100} })), decode.StatusOK, 40},
		{"qinq", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Tags = []uint16{0x88a8, 0x8100} })), decode.StatusOK, 60},
		{"ipv6 hop-by-hop", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{0} })), decode.StatusOK, 68},
		{"ipv6 routing+dstopts+ah", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{43, 60, 51} })), decode.StatusOK, 92},
		{"ipv6 first fragment", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{44} })), decode.StatusOK, 68},
		{"ipv6 later fragment", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{44}; s.FragOffset = 10 })), decode.StatusFragment, 0},
		{"ipv4 later fragment", decode.LinkEthernet, samples.Ethernet(with(tcp4(), func(s *samples.Spec) { s.FragOffset = 185 })), decode.StatusFragment, 0},
		{"ipv4 udp", decode.LinkEthernet, samples.Ethernet(with(tcp4(), func(s *samples.Spec) { s.Proto = 17 })), decode.StatusNotTCP, 0},
		{"ipv4 gre", decode.LinkEthernet, samples.Ethernet(with(tcp4(), func(s *samples.Spec) { s.Proto = 47 })), decode.StatusNotTCP, 0},
		{"ipv4 in ipv4", decode.LinkRaw, prefix(samples.IP(with(tcp4(), func(s *samples.Spec) { s.Proto = 4 }))[:20], ip4), decode.StatusNotTCP, 0},
		{"icmp quoting tcp", decode.LinkRaw, icmp, decode.StatusNotTCP, 0},
		{"ipv6 esp", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Proto = 50 })), decode.StatusNotTCP, 0},
		{"ipv6 no next header", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Proto = 59 })), decode.StatusNotTCP, 0},
		{"arp", decode.LinkEthernet, append(make([]byte, 12), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1), decode.StatusNotIP, 0},
		{"sll ipv4", decode.LinkSLL, sll(0x0800, ip4), decode.StatusOK, 40},
		{"sll vlan ipv6", decode.LinkSLL, sll(0x8100, append([]byte{0, 7, 0x86, 0xdd}, ip6...)), decode.StatusOK, 60},
		{"sll2 ipv6", decode.LinkSLL2, sll2(0x86dd, ip6), decode.StatusOK, 60},
		{"null le ipv4", decode.LinkNull, prefix([]byte{2, 0, 0, 0}, ip4), decode.StatusOK, 40},
		{"null be ipv6", decode.LinkNull, prefix([]byte{0, 0, 0, 30}, ip6), decode.StatusOK, 60},
		{"null le ipv6 bsd", decode.LinkNull, prefix([]byte{24, 0, 0, 0}, ip6), decode.StatusOK, 60},
		{"null other family", decode.LinkNull, prefix([]byte{7, 0, 0, 0}, ip6), decode.StatusNotIP, 0},
		{"loop ipv6", decode.LinkLoop, prefix([]byte{0, 0, 0, 28}, ip6), decode.StatusOK, 60},
		{"raw 101 ipv4", decode.LinkRaw, ip4, decode.StatusOK, 40},
		{"raw dlt 12 ipv6", decode.LinkRawDLT12, ip6, decode.StatusOK, 60},
		{"raw dlt 14 ipv4", decode.LinkRawDLT14, ip4, decode.StatusOK, 40},
		{"linktype ipv4", decode.LinkIPv4, ip4, decode.StatusOK, 40},
		{"linktype ipv6", decode.LinkIPv6, ip6, decode.StatusOK, 60},
		{"raw not ip", decode.LinkRaw, []byte{0x20, 1, 2}, decode.StatusNotIP, 0},
		{"ppp unsupported", decode.LinkType(9), ip4, decode.StatusUnsupportedLink, 0},
		{"empty", decode.LinkEthernet, nil, decode.StatusLinkTruncated, 0},
		{"short ethernet", decode.LinkEthernet, eth4[:13], decode.StatusLinkTruncated, 0},
		{"short vlan", decode.LinkEthernet, append(make([]byte, 12), 0x81, 0, 0), decode.StatusLinkTruncated, 0},
		{"short sll", decode.LinkSLL, make([]byte, 15), decode.StatusLinkTruncated, 0},
		{"short null", decode.LinkNull, []byte{2, 0}, decode.StatusLinkTruncated, 0},
		{"short ipv4", decode.LinkEthernet, eth4[:14+19], decode.StatusIPTruncated, 0},
		{"short ipv4 options", decode.LinkEthernet, samples.Ethernet(with(tcp4(), func(s *samples.Spec) { s.IPOptions = 40 }))[:14+40], decode.StatusIPTruncated, 0},
		{"short ipv6", decode.LinkEthernet, eth6[:14+39], decode.StatusIPTruncated, 0},
		{"raw empty", decode.LinkRaw, nil, decode.StatusIPTruncated, 0},
		{"ipv4 version 6 header", decode.LinkEthernet, badVersion, decode.StatusIPBadHeader, 0},
		{"ipv4 total length short", decode.LinkEthernet, shortTotal, decode.StatusTCPTruncated, 0},
		{"tcp header cut", decode.LinkEthernet, cut(eth4, 1), decode.StatusTCPTruncated, 0},
		{"tcp ports only", decode.LinkEthernet, eth4[:14+20+4], decode.StatusTCPTruncated, 0},
		{"tcp bad data offset", decode.LinkEthernet, badOffset, decode.StatusTCPBadOffset, 0},
		{"ipv6 ext cut", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{0} }))[:14+41], decode.StatusIPv6ExtTruncated, 0},
		{"ipv6 ext overruns", decode.LinkEthernet, samples.Ethernet(with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{0} }))[:14+45], decode.StatusIPv6ExtTruncated, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r record.Record
			got := decode.Decode(tt.link, tt.frame, &r)
			if got != tt.want {
				t.Fatalf("status %v, want %v", got, tt.want)
			}
			if got != decode.StatusOK {
				return
			}
			want4 := r.Src.Is4()
			wantSrc, wantDst, wantFlags := v4a, v4b, uint16(0x012)
			if !want4 {
				wantSrc, wantDst, wantFlags = v6a, v6b, 0x102
			}
			if tt.name == "ipv4 in ipv4" {
				t.Fatal("tunnel decoded")
			}
			if r.Src != wantSrc || r.Dst != wantDst || r.SrcPort != 40000 || r.DstPort != 80 || r.Flags != wantFlags || r.IPLen != tt.ipLen {
				t.Fatalf("record %v, want %v→%v 40000→80 flags %#x ip_len %d", r, wantSrc, wantDst, wantFlags, tt.ipLen)
			}
		})
	}
}

// TestDecodeLinks covers the link layers past Ethernet/VLAN, cooked,
// loopback and raw, and the lengths segmentation offload leaves; the
// crafted captures check the same against tshark (TestCraftedGolden).
func TestDecodeLinks(t *testing.T) {
	ip4, ip6 := samples.IP(tcp4()), samples.IP(tcp6())
	cat := func(p ...[]byte) []byte { return bytes.Join(p, nil) }
	be16 := func(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
	macs := make([]byte, 12)
	eth := func(et int, p ...[]byte) []byte { return cat(macs, be16(et), cat(p...)) }
	e8023 := func(p []byte, pad int) []byte { return cat(macs, be16(len(p)), p, make([]byte, pad)) }
	label := func(l uint32, bottom bool) []byte {
		e := l<<12 | 64
		if bottom {
			e |= 0x100
		}
		return binary.BigEndian.AppendUint32(nil, e)
	}
	pppoe := func(n int) []byte { return cat([]byte{0x11, 0, 0, 1}, be16(n)) }
	snap := []byte{0xaa, 0xaa, 3, 0, 0, 0}
	tlv := func(typ int, v []byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, uint16(4+len(v)))
		b = binary.LittleEndian.AppendUint16(b, uint16(typ))
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	// offloaded is ip4 with n payload bytes and an IPv4 total length of 0.
	offloaded := func(n int) []byte {
		b := samples.IP(with(tcp4(), func(s *samples.Spec) { s.Payload = n }))
		binary.BigEndian.PutUint16(b[2:], 0)
		return b
	}
	long4 := append([]byte{}, ip4...)
	binary.BigEndian.PutUint16(long4[2:], 1500)
	zero6 := append([]byte{}, ip6...)
	binary.BigEndian.PutUint16(zero6[4:], 0)
	long6 := append([]byte{}, ip6...)
	binary.BigEndian.PutUint16(long6[4:], 1400)
	inHeader := append([]byte{}, ip4...)
	binary.BigEndian.PutUint16(inHeader[2:], 12)
	mplsDeep := eth(0x8847)
	for range 20 {
		mplsDeep = append(mplsDeep, label(1, false)...)
	}
	snapped := eth(0x0800, offloaded(1000))

	tests := []struct {
		name  string
		link  decode.LinkType
		frame []byte
		wire  int
		want  decode.Status
		ipLen uint32
	}{
		{"mpls ipv4", decode.LinkEthernet, eth(0x8847, label(100, true), ip4), 0, decode.StatusOK, 40},
		{"mpls stack ipv6", decode.LinkEthernet, eth(0x8847, label(1, false), label(2, false), label(3, true), ip6), 0, decode.StatusOK, 60},
		{"mpls multicast", decode.LinkEthernet, eth(0x8848, label(16, true), ip4), 0, decode.StatusOK, 40},
		{"vlan mpls", decode.LinkEthernet, eth(0x8100, []byte{0, 7}, be16(0x8847), label(5, true), ip4), 0, decode.StatusOK, 40},
		{"mpls gal", decode.LinkEthernet, eth(0x8847, label(13, true), ip4), 0, decode.StatusNotIP, 0},
		{"mpls oam alert", decode.LinkEthernet, eth(0x8847, label(14, true), ip4), 0, decode.StatusNotIP, 0},
		{"mpls gal above", decode.LinkEthernet, eth(0x8847, label(13, false), label(5, true), ip4), 0, decode.StatusOK, 40},
		{"mpls pseudowire", decode.LinkEthernet, eth(0x8847, label(5, true), []byte{0, 0, 0, 0}, ip4), 0, decode.StatusNotIP, 0},
		{"mpls cut", decode.LinkEthernet, eth(0x8847, label(5, false)), 0, decode.StatusLinkTruncated, 0},
		{"mpls empty payload", decode.LinkEthernet, eth(0x8847, label(5, true)), 0, decode.StatusLinkTruncated, 0},
		{"mpls endless stack", decode.LinkEthernet, mplsDeep, 0, decode.StatusNotIP, 0},
		{"pppoe ipv4", decode.LinkEthernet, eth(0x8864, pppoe(2+len(ip4)), be16(0x21), ip4), 0, decode.StatusOK, 40},
		{"pppoe ipv6 compressed protocol", decode.LinkEthernet, eth(0x8864, pppoe(1+len(ip6)), []byte{0x57}, ip6), 0, decode.StatusOK, 60},
		{"qinq pppoe", decode.LinkEthernet, eth(0x88a8, []byte{0, 1}, be16(0x8100), []byte{0, 2}, be16(0x8864), pppoe(2+len(ip4)), be16(0x21), ip4), 0, decode.StatusOK, 40},
		{"pppoe mpls", decode.LinkEthernet, eth(0x8864, pppoe(6+len(ip4)), be16(0x0281), label(7, true), ip4), 0, decode.StatusOK, 40},
		{"pppoe lcp", decode.LinkEthernet, eth(0x8864, pppoe(6), be16(0xc021), []byte{1, 1, 0, 4}), 0, decode.StatusNotIP, 0},
		{"pppoe length 0", decode.LinkEthernet, eth(0x8864, pppoe(0), be16(0x21), ip4), 0, decode.StatusLinkTruncated, 0},
		{"pppoe cut", decode.LinkEthernet, eth(0x8864, []byte{0x11, 0}), 0, decode.StatusLinkTruncated, 0},
		{"llc snap ipv4", decode.LinkEthernet, e8023(cat(snap, be16(0x0800), ip4), 0), 0, decode.StatusOK, 40},
		{"llc snap ipv6 padded", decode.LinkEthernet, e8023(cat(snap, be16(0x86dd), ip6), 10), 0, decode.StatusOK, 60},
		{"vlan llc snap", decode.LinkEthernet, eth(0x8100, []byte{0, 7}, be16(8+len(ip6)), snap, be16(0x86dd), ip6), 0, decode.StatusOK, 60},
		{"llc ip sap", decode.LinkEthernet, e8023(cat([]byte{6, 6, 3}, ip4), 0), 0, decode.StatusOK, 40},
		{"llc i frame snap", decode.LinkEthernet, e8023(cat([]byte{0xaa, 0xaa, 0, 0, 0, 0, 0}, be16(0x0800), ip4), 0), 0, decode.StatusOK, 40},
		{"llc s frame", decode.LinkEthernet, e8023(cat([]byte{0xaa, 0xaa, 1, 0, 0, 0, 0}, be16(0x0800), ip4), 0), 0, decode.StatusNotIP, 0},
		{"llc other oui", decode.LinkEthernet, e8023(cat([]byte{0xaa, 0xaa, 3, 0, 0, 0x0c}, be16(0x0800), ip4), 0), 0, decode.StatusNotIP, 0},
		{"cisco isl", decode.LinkEthernet, cat([]byte{1, 0, 0x0c, 0, 0, 0}, make([]byte, 6), be16(8+len(ip4)), snap, be16(0x0800), ip4), 0, decode.StatusNotIP, 0},
		{"novell raw 802.3", decode.LinkEthernet, e8023(cat([]byte{0xff, 0xff}, ip4), 0), 0, decode.StatusNotIP, 0},
		{"llc cut", decode.LinkEthernet, e8023([]byte{0xaa, 0xaa, 3, 0}, 0), 0, decode.StatusLinkTruncated, 0},
		{"pbb", decode.LinkEthernet, eth(0x88e7, []byte{0, 1, 0, 1}, macs, be16(0x0800), ip4), 0, decode.StatusOK, 40},
		{"pbb customer vlan", decode.LinkEthernet, eth(0x88a8, []byte{0, 1}, be16(0x88e7), []byte{0, 1, 0, 1}, macs, be16(0x8100), []byte{0, 9}, be16(0x86dd), ip6), 0, decode.StatusOK, 60},
		{"pbb cut", decode.LinkEthernet, eth(0x88e7, make([]byte, 10)), 0, decode.StatusLinkTruncated, 0},
		{"nflog family ipv4", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, tlv(10, []byte("p\x00")), tlv(9, ip4)), 0, decode.StatusOK, 40},
		{"nflog family ipv6", decode.LinkNFLOG, cat([]byte{10, 0, 0, 0}, tlv(9, ip6)), 0, decode.StatusOK, 60},
		{"nflog hardware protocol", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, tlv(1, []byte{0x86, 0xdd, 3, 0}), tlv(9, ip6)), 0, decode.StatusOK, 60},
		{"nflog hardware protocol disagrees", decode.LinkNFLOG, cat([]byte{10, 0, 0, 0}, tlv(1, []byte{0x08, 0x00, 3, 0}), tlv(9, ip6)), 0, decode.StatusIPBadHeader, 0},
		{"nflog no payload", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, tlv(11, []byte{1, 0, 0, 0})), 0, decode.StatusNotIP, 0},
		{"nflog other family", decode.LinkNFLOG, cat([]byte{7, 0, 0, 0}, tlv(9, ip4)), 0, decode.StatusNotIP, 0},
		{"nflog tlv length 3", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, []byte{3, 0, 9, 0}, ip4), 0, decode.StatusLinkBadHeader, 0},
		{"nflog payload past the end", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, tlv(9, ip4)[:30]), 0, decode.StatusLinkBadHeader, 0},
		{"nflog tlv header cut", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, tlv(9, ip4))[:6], 100, decode.StatusLinkTruncated, 0},
		{"nflog cut", decode.LinkNFLOG, []byte{2, 0}, 0, decode.StatusLinkTruncated, 0},
		{"ipoib ipv4", decode.LinkIPoIB, cat(make([]byte, 40), be16(0x0800), []byte{0, 0}, ip4), 0, decode.StatusOK, 40},
		{"ipoib ipv6", decode.LinkIPoIB, cat(make([]byte, 40), be16(0x86dd), []byte{0, 0}, ip6), 0, decode.StatusOK, 60},
		{"ipoib arp", decode.LinkIPoIB, cat(make([]byte, 40), be16(0x0806), make([]byte, 30)), 0, decode.StatusNotIP, 0},
		{"ipoib cut", decode.LinkIPoIB, make([]byte, 43), 0, decode.StatusLinkTruncated, 0},
		{"arcnet bsd rfc 1051", decode.LinkArcnetBSD, cat([]byte{1, 2, 0xf0}, ip4), 0, decode.StatusOK, 40},
		{"arcnet bsd rfc 1201", decode.LinkArcnetBSD, cat([]byte{1, 2, 0xd4, 0, 0, 1}, ip4), 0, decode.StatusOK, 40},
		{"arcnet bsd exception", decode.LinkArcnetBSD, cat([]byte{1, 2, 0xd4, 0xff, 0xff, 0xff, 0xd4, 0, 0, 1}, ip4), 0, decode.StatusOK, 40},
		{"arcnet linux ipv6", decode.LinkArcnetLinux, cat([]byte{1, 2, 0, 0, 0xc4, 0, 0, 1}, ip6), 0, decode.StatusOK, 60},
		{"arcnet linux split flag 0xff", decode.LinkArcnetLinux, cat([]byte{1, 2, 0, 0, 0xd4, 0xff, 0, 1}, ip4), 0, decode.StatusOK, 40},
		{"arcnet arp", decode.LinkArcnetBSD, cat([]byte{1, 2, 0xd5, 0, 0, 1}, make([]byte, 28)), 0, decode.StatusNotIP, 0},
		{"arcnet cut", decode.LinkArcnetBSD, []byte{1, 2}, 0, decode.StatusLinkTruncated, 0},
		{"arcnet header cut", decode.LinkArcnetLinux, []byte{1, 2, 0, 0, 0xd4, 0}, 0, decode.StatusLinkTruncated, 0},
		{"null ethertype be", decode.LinkNull, cat([]byte{0, 0, 8, 0}, ip4), 0, decode.StatusOK, 40},
		{"null ethertype le", decode.LinkNull, cat([]byte{0xdd, 0x86, 0, 0}, ip6), 0, decode.StatusOK, 60},
		{"null ppp", decode.LinkNull, cat([]byte{0xff, 3, 0, 0x21}, ip4), 0, decode.StatusOK, 40},
		{"null linux af_inet6", decode.LinkNull, cat([]byte{10, 0, 0, 0}, ip6), 0, decode.StatusNotIP, 0},
		{"null both halves", decode.LinkNull, cat([]byte{8, 0, 8, 0}, ip4), 0, decode.StatusNotIP, 0},
		{"loop little-endian family", decode.LinkLoop, cat([]byte{2, 0, 0, 0}, ip4), 0, decode.StatusNotIP, 0},
		{"loop ethertype", decode.LinkLoop, cat([]byte{0, 0, 8, 0}, ip4), 0, decode.StatusNotIP, 0},
		{"raw ppp", decode.LinkRaw, cat([]byte{0xff, 3, 0, 0x21}, ip4), 0, decode.StatusOK, 40},
		{"raw isdn ppp", decode.LinkRaw, cat(make([]byte, 6), []byte{0xff, 3, 0, 0x57}, ip6), 0, decode.StatusOK, 60},
		{"raw cisco hdlc", decode.LinkRaw, cat([]byte{0x0f, 0, 8, 0}, ip4), 0, decode.StatusNotIP, 0},
		{"linktype ipv4 holding ipv6", decode.LinkIPv4, ip6, 0, decode.StatusIPBadHeader, 0},
		{"sll llc snap", decode.LinkSLL, cat(make([]byte, 14), be16(4), snap, be16(0x0800), ip4), 0, decode.StatusOK, 40},
		{"sll2 llc snap", decode.LinkSLL2, cat(be16(4), make([]byte, 18), snap, be16(0x86dd), ip6), 0, decode.StatusOK, 60},
		{"sll ppp hdlc", decode.LinkSLL, cat(make([]byte, 14), be16(7), []byte{0xff, 3}, be16(0x21), ip4), 0, decode.StatusOK, 40},
		{"sll ppp no address", decode.LinkSLL, cat(make([]byte, 14), be16(7), []byte{0x57}, ip6), 0, decode.StatusOK, 60},
		{"sll ppp cut", decode.LinkSLL, cat(make([]byte, 14), be16(7), []byte{0xff}), 0, decode.StatusLinkTruncated, 0},
		{"sll novell", decode.LinkSLL, cat(make([]byte, 14), be16(1), []byte{0xff, 0xff}, ip4), 0, decode.StatusNotIP, 0},
		{"sll netlink", decode.LinkSLL, cat([]byte{0, 0}, be16(824), make([]byte, 10), be16(0x0800), ip4), 0, decode.StatusNotIP, 0},
		{"sll2 netlink", decode.LinkSLL2, cat(be16(0x0800), make([]byte, 6), be16(824), make([]byte, 10), ip4), 0, decode.StatusNotIP, 0},
		{"ipv4 total length 0", decode.LinkEthernet, eth(0x0800, offloaded(1000)), 0, decode.StatusOK, 1040},
		{"ipv4 total length 0 snapped", decode.LinkEthernet, snapped[:80], len(snapped), decode.StatusOK, 1040},
		{"ipv4 total length 0 over 64 KiB (big TCP)", decode.LinkEthernet, eth(0x0800, offloaded(70000)), 0, decode.StatusOK, 70040},
		{"ipv4 total length 0 in 802.3", decode.LinkEthernet, append(e8023(cat(snap, be16(0x0800), offloaded(1000))[:700], 0), make([]byte, 400)...), 0, decode.StatusOK, 692},
		{"ipv4 total length 0 in pppoe", decode.LinkEthernet, eth(0x8864, pppoe(600), be16(0x21), offloaded(1000)), 0, decode.StatusOK, 598},
		{"ipv4 total length 0 in mpls", decode.LinkEthernet, eth(0x8847, label(3, true), offloaded(1000)), 0, decode.StatusOK, 1040},
		{"ipv4 total length 0 in nflog", decode.LinkNFLOG, cat([]byte{2, 0, 0, 0}, tlv(9, offloaded(1000)), tlv(11, []byte{1, 0, 0, 0})), 0, decode.StatusOK, 1040},
		{"ipv4 total length past the frame", decode.LinkEthernet, eth(0x0800, long4), 0, decode.StatusOK, 1500},
		{"ipv4 total length inside the header", decode.LinkEthernet, eth(0x0800, inHeader), 0, decode.StatusIPBadHeader, 0},
		{"ipv6 payload length 0", decode.LinkEthernet, eth(0x86dd, zero6), 0, decode.StatusIPv6ZeroLength, 0},
		{"ipv6 payload length past the frame", decode.LinkEthernet, eth(0x86dd, long6), 0, decode.StatusOK, 1440},
		{"wire length below the frame", decode.LinkEthernet, eth(0x0800, offloaded(100)), 10, decode.StatusOK, 140},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r record.Record
			got, seg := decode.DecodeSegmentLen(tt.link, tt.frame, tt.wire, &r)
			if got != tt.want {
				t.Fatalf("status %v, want %v", got, tt.want)
			}
			if tt.wire == 0 {
				var r2 record.Record
				if st := decode.Decode(tt.link, tt.frame, &r2); st != got || r2 != r {
					t.Fatalf("Decode gives %v %v, DecodeSegmentLen %v %v", st, r2, got, r)
				}
			}
			if got != decode.StatusOK {
				return
			}
			wantSrc, wantDst, wantFlags := v4a, v4b, uint16(0x012)
			if r.Src.Is6() {
				wantSrc, wantDst, wantFlags = v6a, v6b, 0x102
			}
			if r.Src != wantSrc || r.Dst != wantDst || r.SrcPort != 40000 || r.DstPort != 80 || r.Flags != wantFlags || r.IPLen != tt.ipLen {
				t.Fatalf("record %v, want %v→%v 40000→80 flags %#x ip_len %d", r, wantSrc, wantDst, wantFlags, tt.ipLen)
			}
			if len(seg) < 20 || binary.BigEndian.Uint16(seg) != 40000 {
				t.Fatalf("segment %x does not start at the TCP header", seg)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	seen := map[string]bool{}
	for s := decode.Status(0); s < decode.NumStatus; s++ {
		if s.String() == "" || s.String() == "unknown" || seen[s.String()] {
			t.Fatalf("status %d has label %q", s, s)
		}
		seen[s.String()] = true
		if s.Malformed() != (s >= decode.StatusUnsupportedLink) {
			t.Fatalf("%v: Malformed() = %v", s, s.Malformed())
		}
	}
	if len(decode.MalformedStatuses()) != int(decode.NumStatus-decode.StatusUnsupportedLink) {
		t.Fatal("MalformedStatuses is incomplete")
	}
	if decode.LinkSLL2.String() != "LinuxSLL2" || decode.LinkEthernet.String() != "Ethernet" {
		t.Fatalf("link names %q %q", decode.LinkSLL2, decode.LinkEthernet)
	}
	for _, lt := range []decode.LinkType{decode.LinkNFLOG, decode.LinkIPoIB, decode.LinkArcnetBSD, decode.LinkArcnetLinux} {
		if !decode.Supported(lt) {
			t.Errorf("%v (%d) not supported", lt, uint32(lt))
		}
	}
}

// sampleFrames reads every sample capture.
func sampleFrames(tb testing.TB) []samples.Frame {
	var all []samples.Frame
	for _, p := range samples.Captures(tb) {
		all = append(all, samples.Frames(tb, p)...)
	}
	return all
}

// FuzzDecode feeds arbitrary frames to the decoder. It must never panic,
// and whatever it records must agree with gopacket's own decoding of the
// same bytes where gopacket decodes them without error.
func FuzzDecode(f *testing.F) {
	for _, fr := range sampleFrames(f) {
		f.Add(fr.Link, fr.Data)
	}
	for _, s := range []samples.Spec{tcp4(), tcp6(),
		with(tcp6(), func(s *samples.Spec) { s.Ext = []uint8{0, 44} }),
		with(tcp4(), func(s *samples.Spec) { s.Tags = []uint16{0x8100, 0x8100} }),
	} {
		f.Add(uint32(decode.LinkEthernet), samples.Ethernet(s))
		f.Add(uint32(decode.LinkRaw), samples.IP(s))
	}
	f.Fuzz(func(t *testing.T, link uint32, frame []byte) {
		lt := decode.LinkType(link)
		var r record.Record
		st := decode.Decode(lt, frame, &r)
		if st >= decode.NumStatus {
			t.Fatalf("status %d out of range", st)
		}
		if st != decode.StatusOK {
			return
		}
		if !r.Src.IsValid() || !r.Dst.IsValid() || r.Src.Is4() != r.Dst.Is4() {
			t.Fatalf("addresses %v %v", r.Src, r.Dst)
		}
		if r.Flags > 0x1ff {
			t.Fatalf("flags %#x", r.Flags)
		}
		if r.Src.Is4() && r.IPLen < 40 {
			t.Fatalf("ipv4 record with ip_len %d", r.IPLen)
		}
		compareGopacket(t, lt, frame, &r)
	})
}

// compareGopacket decodes frame with gopacket and, when gopacket finds the
// same first IP layer directly followed by a whole TCP header without an
// error, checks the fields agree.
func compareGopacket(t *testing.T, lt decode.LinkType, frame []byte, r *record.Record) {
	if lt != decode.LinkEthernet && lt != decode.LinkRaw {
		return
	}
	first := layers.LayerTypeEthernet
	if lt == decode.LinkRaw {
		first = layers.LayerTypeIPv4
		if frame[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
	}
	p := gopacket.NewPacket(frame, first, gopacket.DecodeOptions{NoCopy: true, Lazy: false})
	if p.ErrorLayer() != nil {
		return
	}
	ls := p.Layers()
	ip := -1
	for i, l := range ls {
		if l.LayerType() == layers.LayerTypeIPv4 || l.LayerType() == layers.LayerTypeIPv6 {
			ip = i
			break
		}
	}
	if ip < 0 {
		return
	}
	tcpAt := -1
	for i := ip + 1; i < len(ls); i++ {
		switch ls[i].LayerType() {
		case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination,
			layers.LayerTypeIPv6Fragment, layers.LayerTypeIPSecAH:
			continue
		case layers.LayerTypeTCP:
			tcpAt = i
		}
		break
	}
	if tcpAt < 0 {
		return
	}
	flow := ls[ip].(gopacket.NetworkLayer).NetworkFlow()
	src, _ := netip.AddrFromSlice(flow.Src().Raw())
	dst, _ := netip.AddrFromSlice(flow.Dst().Raw())
	if src != r.Src || dst != r.Dst {
		t.Fatalf("addresses %v→%v, gopacket %v→%v", r.Src, r.Dst, src, dst)
	}
	tc := ls[tcpAt].(*layers.TCP)
	if uint16(tc.SrcPort) != r.SrcPort || uint16(tc.DstPort) != r.DstPort {
		t.Fatalf("ports %d→%d, gopacket %d→%d", r.SrcPort, r.DstPort, tc.SrcPort, tc.DstPort)
	}
	var fl uint16
	for i, b := range []bool{tc.FIN, tc.SYN, tc.RST, tc.PSH, tc.ACK, tc.URG, tc.ECE, tc.CWR, tc.NS} {
		if b {
			fl |= 1 << i
		}
	}
	if fl != r.Flags {
		t.Fatalf("flags %#x, gopacket %#x", r.Flags, fl)
	}
}

// BenchmarkDecode decodes the frames of every sample capture in turn.
func BenchmarkDecode(b *testing.B) {
	frames := sampleFrames(b)
	var r record.Record
	b.ReportAllocs()
	b.ResetTimer()
	ok := 0
	for i := 0; b.Loop(); i++ {
		fr := &frames[i%len(frames)]
		if decode.Decode(decode.LinkType(fr.Link), fr.Data, &r) == decode.StatusOK {
			ok++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
	if ok == 0 {
		b.Fatal("no frame decoded")
	}
}

// BenchmarkDecodeEthernetIPv4 decodes only the sample frames on the common
// path: Ethernet, no tag, IPv4.
func BenchmarkDecodeEthernetIPv4(b *testing.B) {
	var frames [][]byte
	for _, fr := range sampleFrames(b) {
		if decode.LinkType(fr.Link) == decode.LinkEthernet && len(fr.Data) > 14 && binary.BigEndian.Uint16(fr.Data[12:]) == 0x0800 {
			frames = append(frames, fr.Data)
		}
	}
	if len(frames) == 0 {
		b.Fatal("no Ethernet/IPv4 sample frame")
	}
	var r record.Record
	b.ReportAllocs()
	ok := 0
	for i := 0; b.Loop(); i++ {
		if decode.Decode(decode.LinkEthernet, frames[i%len(frames)], &r) == decode.StatusOK {
			ok++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
	if ok == 0 {
		b.Fatal("no frame decoded")
	}
}

// BenchmarkDecodeGopacket is the alternative measured against: gopacket's
// DecodingLayerParser with preallocated layers, over the Ethernet samples.
func BenchmarkDecodeGopacket(b *testing.B) {
	var frames [][]byte
	for _, fr := range sampleFrames(b) {
		if decode.LinkType(fr.Link) == decode.LinkEthernet {
			frames = append(frames, fr.Data)
		}
	}
	var (
		eth   layers.Ethernet
		dot1q layers.Dot1Q
		ip4   layers.IPv4
		ip6   layers.IPv6
		tcp   layers.TCP
	)
	parser := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &dot1q, &ip4, &ip6, &tcp)
	parser.IgnoreUnsupported = true
	decoded := make([]gopacket.LayerType, 0, 8)
	var r record.Record
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_ = parser.DecodeLayers(frames[i%len(frames)], &decoded)
		for _, lt := range decoded {
			switch lt {
			case layers.LayerTypeIPv4:
				r.Src, _ = netip.AddrFromSlice(ip4.SrcIP)
				r.Dst, _ = netip.AddrFromSlice(ip4.DstIP)
				r.IPLen = uint32(ip4.Length)
			case layers.LayerTypeTCP:
				r.SrcPort, r.DstPort = uint16(tcp.SrcPort), uint16(tcp.DstPort)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
