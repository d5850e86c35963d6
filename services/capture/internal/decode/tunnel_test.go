package decode_test

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/shared/record"
)

// tunnelFrames are the frames of the crafted tunnel capture (cmd/gencrafted).
func tunnelFrames(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, f := range samples.Frames(tb, "../../testdata/crafted/mirror/tunnels.pcap") {
		out = append(out, f.Data)
	}
	if len(out) < 10 {
		tb.Fatalf("%d tunnel frames: too few to test with", len(out))
	}
	return out
}

func allTunnels() decode.Tunnels {
	t, err := decode.ParseTunnels("vxlan,geneve,gre,erspan")
	if err != nil {
		panic(err)
	}
	return t
}

var innerNets = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("2001:db8:9::/48")}

// checkTunnel checks what the Decoder made of one frame: a status in
// range, and for a record out of a tunnel of a frame as cmd/gencrafted made it
// (whole) the inner addresses.
func checkTunnel(t *testing.T, d *decode.Decoder, frame []byte, whole bool) {
	t.Helper()
	var r record.Record
	st, _, tun := d.Decode(decode.LinkEthernet, frame, 0, &r)
	if st >= decode.NumStatus || tun > decode.TunnelERSPAN {
		t.Fatalf("status %d, tunnel %d out of range", st, tun)
	}
	if whole && st == decode.StatusOK && tun != decode.TunnelNone {
		if !innerNets[0].Contains(r.Src) && !innerNets[1].Contains(r.Src) {
			t.Fatalf("%s record with source %v, not an inner address", tun, r.Src)
		}
	}
}

// TestTunnelsCutAndCorrupted decodes every tunnel frame cut at every
// length and with random bytes changed: gopacket's layers index their
// input without checks, so the decoder must check first. No panic, and
// statuses in range.
func TestTunnelsCutAndCorrupted(t *testing.T) {
	d := decode.NewDecoder(allTunnels())
	rng := rand.New(rand.NewPCG(1, 2))
	for _, fr := range tunnelFrames(t) {
		for n := range len(fr) + 1 {
			checkTunnel(t, d, fr[:n], n == len(fr))
		}
		for range 300 {
			b := append([]byte{}, fr...)
			for range 1 + rng.IntN(4) {
				b[14+rng.IntN(len(b)-14)] = byte(rng.Uint32())
			}
			checkTunnel(t, d, b, false)
		}
	}
}

// TestTunnelsWhole decodes the whole tunnel frames: records come out of
// each kind of tunnel, and the three broken ones are malformed.
func TestTunnelsWhole(t *testing.T) {
	d := decode.NewDecoder(allTunnels())
	var ok [decode.TunnelERSPAN + 1]int
	malformed := 0
	for _, fr := range tunnelFrames(t) {
		var r record.Record
		st, _, tun := d.Decode(decode.LinkEthernet, fr, 0, &r)
		switch {
		case st == decode.StatusOK:
			ok[tun]++
		case st == decode.StatusTunnelMalformed:
			malformed++
		}
	}
	for tun := decode.TunnelNone; tun <= decode.TunnelERSPAN; tun++ {
		if ok[tun] == 0 {
			t.Errorf("no record out of %s", tun)
		}
	}
	if malformed != 3 {
		t.Errorf("%d malformed tunnel frames, want 3", malformed)
	}
}

// TestTunnelsOff: without tunnels, the Decoder is the fast path.
func TestTunnelsOff(t *testing.T) {
	d := decode.NewDecoder(decode.Tunnels{})
	for _, fr := range tunnelFrames(t) {
		var r1, r2 record.Record
		st, _, tun := d.Decode(decode.LinkEthernet, fr, 0, &r1)
		if want := decode.Decode(decode.LinkEthernet, fr, &r2); st != want || tun != decode.TunnelNone || r1 != r2 {
			t.Fatalf("Decoder without tunnels: %v %v %+v, Decode: %v %+v", st, tun, r1, want, r2)
		}
	}
}

func TestParseTunnels(t *testing.T) {
	if _, err := decode.ParseTunnels("vxlan,ipip"); err == nil {
		t.Error("ParseTunnels accepted ipip")
	}
	tu, err := decode.ParseTunnels(" VXLAN , erspan,")
	if err != nil || !tu.VXLAN || !tu.ERSPAN || tu.GRE || tu.Geneve || tu.VXLANPort != 4789 || tu.GenevePort != 6081 {
		t.Errorf("ParseTunnels: %+v, %v", tu, err)
	}
	if _, err := decode.ParseIDs("1,16777216", decode.MaxVNI); err == nil {
		t.Error("ParseIDs accepted a VNI of 2^24")
	}
	if ids, err := decode.ParseIDs("7, 1023", decode.MaxSessionID); err != nil || len(ids) != 2 || ids[1] != 1023 {
		t.Errorf("ParseIDs: %v, %v", ids, err)
	}
}

// jumbogram is an IPv6 TCP packet of the given jumbo payload length
// (RFC 2675): payload length 0, a hop-by-hop header with the option.
func jumbogram(jumbo uint32) []byte {
	ip := samples.IP(tcp6())
	hbh := binary.BigEndian.AppendUint32([]byte{ip[6], 0, 0xc2, 4}, jumbo)
	b := append(append(append([]byte{}, ip[:40]...), hbh...), ip[40:]...)
	binary.BigEndian.PutUint16(b[4:], 0)
	b[6] = 0 // hop-by-hop
	return b
}

func TestJumbogram(t *testing.T) {
	var r record.Record
	// The snapshot length cut the 100,000-byte payload.
	if st := decode.Decode(decode.LinkRaw, jumbogram(100000), &r); st != decode.StatusOK {
		t.Fatalf("jumbogram: %v", st)
	}
	if r.IPLen != 100040 || r.Dst != v6b || r.DstPort != 80 || r.Flags != 0x102 {
		t.Errorf("jumbogram record %+v: want ip_len 100040 (jumbo length + 40), dst %v port 80 flags 0x102", r, v6b)
	}
	// A jumbo length that fits 16 bits is not a jumbogram (RFC 2675).
	if st := decode.Decode(decode.LinkRaw, jumbogram(1000), &r); st != decode.StatusIPv6ZeroLength {
		t.Errorf("jumbo option of 1000 bytes: %v, want %v", st, decode.StatusIPv6ZeroLength)
	}
	b := jumbogram(100000)
	b[42] = 0xc3 // another option
	if st := decode.Decode(decode.LinkRaw, b, &r); st != decode.StatusIPv6ZeroLength {
		t.Errorf("no jumbo option: %v, want %v", st, decode.StatusIPv6ZeroLength)
	}
}

// TestFallback: FDDI and PPP in HDLC framing are decoded through gopacket;
// Token Ring, which neither decoder knows, stays unsupported.
func TestFallback(t *testing.T) {
	ip4 := samples.IP(tcp4())
	fddi := append([]byte{0x50, 2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0xaa, 0xaa, 3, 0, 0, 0, 8, 0}, ip4...)
	ppp := append([]byte{0xff, 0x03, 0x00, 0x21}, ip4...)
	d := decode.NewDecoder(decode.Tunnels{})
	for _, c := range []struct {
		name  string
		lt    decode.LinkType
		frame []byte
		want  decode.Status
	}{
		{"fddi", 10, fddi, decode.StatusOK},
		{"fddi cut", 10, fddi[:8], decode.StatusLinkTruncated},
		{"ppp-hdlc", decode.LinkPPPHDLC, ppp, decode.StatusOK},
		{"ppp-hdlc lcp", decode.LinkPPPHDLC, []byte{0xff, 0x03, 0xc0, 0x21, 1, 1, 0, 4}, decode.StatusNotIP},
		{"token ring", 6, append(make([]byte, 14), ip4...), decode.StatusUnsupportedLink},
	} {
		var r record.Record
		st, _, _ := d.Decode(c.lt, c.frame, 0, &r)
		if st != c.want {
			t.Errorf("%s: %v, want %v", c.name, st, c.want)
			continue
		}
		if st == decode.StatusOK && (r.Src != v4a || r.Dst != v4b || r.DstPort != 80 || int(r.IPLen) != len(ip4)) {
			t.Errorf("%s: record %+v", c.name, r)
		}
	}
	if !decode.Fallback(10) || !decode.Fallback(decode.LinkPPPHDLC) || decode.Fallback(6) || decode.Fallback(decode.LinkSLL2) {
		t.Error("Fallback: want FDDI and PPP-HDLC, not Token Ring or SLL2")
	}
}

func FuzzDecoder(f *testing.F) {
	for _, fr := range tunnelFrames(f) {
		f.Add(fr)
	}
	d := decode.NewDecoder(allTunnels())
	f.Fuzz(func(t *testing.T, frame []byte) { checkTunnel(t, d, frame, false) })
}

// BenchmarkDecoderTunnels decodes the crafted tunnel frames in mirror
// mode, beside BenchmarkDecodeEthernetIPv4's plain frames.
func BenchmarkDecoderTunnels(b *testing.B) {
	frames := tunnelFrames(b)
	d := decode.NewDecoder(allTunnels())
	var r record.Record
	b.ReportAllocs()
	ok := 0
	for i := 0; b.Loop(); i++ {
		if st, _, _ := d.Decode(decode.LinkEthernet, frames[i%len(frames)], 0, &r); st == decode.StatusOK {
			ok++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
	if ok == 0 {
		b.Fatal("no frame decoded")
	}
}

// BenchmarkDecoderPlain decodes the sample frames through a Decoder with
// no tunnel, as capture does: BenchmarkDecode's cost and no allocation.
func BenchmarkDecoderPlain(b *testing.B) {
	frames := sampleFrames(b)
	d := decode.NewDecoder(decode.Tunnels{})
	var r record.Record
	b.ReportAllocs()
	ok := 0
	for i := 0; b.Loop(); i++ {
		fr := &frames[i%len(frames)]
		if st, _, _ := d.Decode(decode.LinkType(fr.Link), fr.Data, 0, &r); st == decode.StatusOK {
			ok++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
	if ok == 0 {
		b.Fatal("no frame decoded")
	}
}

// FuzzFallback decodes frames of any link type through a Decoder, so the
// link types only gopacket knows (FDDI, PPP, 802.11, ...) are fuzzed too.
func FuzzFallback(f *testing.F) {
	for _, name := range []string{"fddi.pcap", "ppp-hdlc.pcap"} {
		for _, fr := range samples.Frames(f, "../../testdata/crafted/"+name) {
			f.Add(fr.Link, fr.Data)
		}
	}
	f.Add(uint32(105), []byte{0x08, 0x01, 0, 0})
	d := decode.NewDecoder(allTunnels())
	f.Fuzz(func(t *testing.T, link uint32, frame []byte) {
		var r record.Record
		st, _, _ := d.Decode(decode.LinkType(link), frame, 0, &r)
		if st >= decode.NumStatus {
			t.Fatalf("status %d out of range", st)
		}
		if st == decode.StatusOK && (!r.Src.IsValid() || r.Src.Is4() != r.Dst.Is4()) {
			t.Fatalf("addresses %v %v", r.Src, r.Dst)
		}
	})
}
