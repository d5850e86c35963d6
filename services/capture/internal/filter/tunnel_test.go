package filter

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"
)

// outerTunnel reads with gopacket what a tunnel program decides on: the
// outer destination, and whether the packet is GRE or UDP to a port.
func outerTunnel(frame []byte) (dst netip.Addr, gre bool, port uint16) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	if n := p.NetworkLayer(); n != nil {
		dst, _ = netip.AddrFromSlice(n.NetworkFlow().Dst().Raw())
	}
	if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		port = uint16(u.DstPort)
	}
	gre = p.Layer(layers.LayerTypeGRE) != nil
	return dst.Unmap(), gre, port
}

// TestTunnelProgram runs mirror mode's kernel program over the crafted
// tunnel frames and compares its verdicts with gopacket's reading of the
// outer headers.
func TestTunnelProgram(t *testing.T) {
	var frames [][]byte
	for _, f := range samples.Frames(t, "../../testdata/crafted/mirror/tunnels.pcap") {
		frames = append(frames, f.Data)
	}
	if len(frames) < 10 {
		t.Fatalf("%d tunnel frames: too few to test with", len(frames))
	}
	target4, target6 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8:ff::2")
	for _, tu := range []Tunnels{
		{Hosts: []netip.Addr{target4, target6}, UDPPorts: []uint16{4789, 6081}, GRE: true},
		{UDPPorts: []uint16{4789}},
		{Hosts: []netip.Addr{netip.MustParseAddr("192.0.2.9")}, GRE: true},
		{Hosts: []netip.Addr{target6}, UDPPorts: []uint16{4789, 6081}},
	} {
		prog, err := tu.Program(decode.LinkEthernet, ProgramOptions{Snaplen: 65535})
		if err != nil {
			t.Fatalf("%s: %v", tu, err)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatalf("%s: %v", tu, err)
		}
		accepted := 0
		for i, fr := range frames {
			dst, gre, port := outerTunnel(fr)
			want := (len(tu.Hosts) == 0 || slices.Contains(tu.Hosts, dst)) &&
				((gre && tu.GRE) || (port != 0 && slices.Contains(tu.UDPPorts, port)))
			n, err := vm.Run(fr)
			if err != nil {
				t.Fatal(err)
			}
			if (n > 0) != want {
				t.Errorf("%s: frame %d (dst %v, gre %v, udp port %d): accepted %v, want %v", tu, i, dst, gre, port, n > 0, want)
			}
			if n > 0 {
				accepted++
			}
		}
		t.Logf("%s: %d of %d frames", tu, accepted, len(frames))
	}
	if _, err := (Tunnels{}).Program(decode.LinkEthernet, ProgramOptions{}); err == nil {
		t.Error("a program admitting no tunnel compiled")
	}
}
