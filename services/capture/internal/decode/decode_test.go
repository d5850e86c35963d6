package decode_test

import (
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
		ipLen uint16
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
				r.IPLen = ip4.Length
			case layers.LayerTypeTCP:
				r.SrcPort, r.DstPort = uint16(tcp.SrcPort), uint16(tcp.DstPort)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
