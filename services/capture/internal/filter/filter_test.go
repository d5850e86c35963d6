package filter

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/net/bpf"
	"os"
)

func TestParse(t *testing.T) {
	tests := []struct {
		expr string
		want string // canonical form; "" means a syntax error
	}{
		{"tcp", "tcp"},
		{"dst port 80", "tcp and dst port 80"},
		{"tcp dst port 8080 and dst host ::1", "tcp and dst port 8080 and dst host ::1"},
		{"tcp and dst host 127.0.0.1 and dst port 7000", "tcp and dst host 127.0.0.1 and dst port 7000"},
		{"TCP && PORT 443", "tcp and port 443"},
		{"src net 10.0.0.0/8 and port 443", "tcp and src net 10.0.0.0/8 and port 443"},
		{"net 10.1.2.3/8", "tcp and net 10.0.0.0/8"},
		{"ip6 and host 2001:db8::1", "tcp and ip6 and host 2001:db8::1"},
		{"ip", "tcp and ip"},
		{"host ::ffff:1.2.3.4", "tcp and host 1.2.3.4"},
		{"", ""},
		{"udp", ""},
		{"tcp or udp", ""},
		{"not port 80", ""},
		{"(port 80)", ""},
		{"port http", ""},
		{"port 70000", ""},
		{"host example.com", ""},
		{"port 80 and", ""},
		{"port 80 port 81", ""},
		{"dst", ""},
		{"tcp dst", ""},
		{"src port", ""},
		{"net 10.0.0.0/33", ""},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			f, err := Parse(tt.expr)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %q, want an error", tt.expr, f)
				}
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("error %v does not wrap ErrSyntax", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.expr, err)
			}
			if got := f.String(); got != tt.want {
				t.Fatalf("Parse(%q) = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.1:7000", "tcp and dst host 127.0.0.1 and dst port 7000", true},
		{"0.0.0.0:80", "tcp and dst port 80", true},
		{"[::]:80", "tcp and dst port 80", true},
		{":80", "tcp and dst port 80", true},
		{"[::1]:8080", "tcp and dst host ::1 and dst port 8080", true},
		{"127.0.0.1", "", false},
		{"localhost:80", "", false},
		{"127.0.0.1:0", "", false},
		{"127.0.0.1:http", "", false},
		{"127.0.0.1:65536", "", false},
	}
	for _, tt := range tests {
		ap, err := ParseListen(tt.in)
		if (err == nil) != tt.ok {
			t.Fatalf("ParseListen(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err == nil {
			if got := FromListen(ap).String(); got != tt.want {
				t.Fatalf("FromListen(%q) = %q, want %q", tt.in, got, tt.want)
			}
		}
	}
}

func rec(src, dst string, sp, dp uint16) *record.Record {
	return &record.Record{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sp, DstPort: dp}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		expr string
		r    *record.Record
		want bool
	}{
		{"tcp", rec("1.2.3.4", "5.6.7.8", 1, 2), true},
		{"dst port 2", rec("1.2.3.4", "5.6.7.8", 1, 2), true},
		{"dst port 1", rec("1.2.3.4", "5.6.7.8", 1, 2), false},
		{"port 1", rec("1.2.3.4", "5.6.7.8", 1, 2), true},
		{"src port 2", rec("1.2.3.4", "5.6.7.8", 1, 2), false},
		{"host 5.6.7.8", rec("1.2.3.4", "5.6.7.8", 1, 2), true},
		{"src host 5.6.7.8", rec("1.2.3.4", "5.6.7.8", 1, 2), false},
		{"dst net 5.6.0.0/16 and dst port 2", rec("1.2.3.4", "5.6.7.8", 1, 2), true},
		{"dst net 5.7.0.0/16", rec("1.2.3.4", "5.6.7.8", 1, 2), false},
		{"ip6", rec("1.2.3.4", "5.6.7.8", 1, 2), false},
		{"ip6 and dst host ::1", rec("::1", "::1", 1, 2), true},
		{"dst host 127.0.0.1", rec("::1", "::1", 1, 2), false},
		{"ip", rec("::1", "::1", 1, 2), false},
	}
	for _, tt := range tests {
		f, err := Parse(tt.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(tt.r); got != tt.want {
			t.Errorf("%q.Match(%v) = %v, want %v", tt.expr, tt.r, got, tt.want)
		}
	}
	// The listen filter with an unspecified host matches any destination.
	any := FromListen(netip.MustParseAddrPort("0.0.0.0:7000"))
	for _, r := range []*record.Record{rec("1.1.1.1", "2.2.2.2", 5, 7000), rec("::1", "::2", 5, 7000)} {
		if !any.Match(r) {
			t.Errorf("0.0.0.0:7000 does not match %v", r)
		}
	}
	if any.Match(rec("1.1.1.1", "2.2.2.2", 7000, 5)) {
		t.Error("0.0.0.0:7000 matches a packet from port 7000")
	}
}

// filters under test in the kernel-program comparisons.
var programFilters = []string{
	"tcp",
	"dst port 80",
	"port 80",
	"src port 80",
	"tcp and dst host 10.0.0.1 and dst port 80",
	"dst host 2001:db8::1 and dst port 80",
	"host 10.0.0.1",
	"host 2001:db8::1",
	"src net 10.0.0.0/8",
	"dst net 2001:db8::/33 and port 443",
	"net ::/0",
	"net 0.0.0.0/0",
	"ip and port 80",
	"ip6 and port 80",
	"dst host ::1 and dst port 8080",
	"dst host 192.150.187.43 and dst port 80",
}

// TestProgramMatchesUserSpace runs every compiled kernel program in the BPF
// interpreter over synthetic frames and checks it agrees with Decode+Match:
// a frame that gives a matching record is always accepted, and a frame the
// program accepts without one is only ever an IPv6 packet with extension
// headers or a frame with more than two VLAN tags (left to user space).
func TestProgramMatchesUserSpace(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addrs4 := []string{"10.0.0.1", "10.0.0.2", "10.9.9.9", "192.168.1.1", "127.0.0.1", "192.150.187.43"}
	addrs6 := []string{"2001:db8::1", "2001:db8::2", "2001:db8:8000::1", "::1", "fe80::1"}
	ports := []uint16{80, 443, 8080, 1234, 53}
	var frames [][]byte
	var permissive []bool
	for range 3000 {
		s := samples.Spec{SrcPort: ports[rng.IntN(len(ports))], DstPort: ports[rng.IntN(len(ports))], Flags: uint16(rng.IntN(512))}
		v6 := rng.IntN(2) == 0
		if v6 {
			s.Src, s.Dst = netip.MustParseAddr(addrs6[rng.IntN(len(addrs6))]), netip.MustParseAddr(addrs6[rng.IntN(len(addrs6))])
			if rng.IntN(4) == 0 {
				exts := []uint8{0, 43, 44, 51, 60}
				s.Ext = []uint8{exts[rng.IntN(len(exts))]}
			}
		} else {
			s.Src, s.Dst = netip.MustParseAddr(addrs4[rng.IntN(len(addrs4))]), netip.MustParseAddr(addrs4[rng.IntN(len(addrs4))])
			s.IPOptions = 4 * rng.IntN(3)
		}
		switch rng.IntN(10) {
		case 0:
			s.Proto = 17
		case 1:
			s.FragOffset = uint16(1 + rng.IntN(100))
		}
		tags := []int{0, 0, 0, 1, 1, 2, 3, 4}[rng.IntN(8)]
		for range tags {
			s.Tags = append(s.Tags, []uint16{0x8100, 0x88a8}[rng.IntN(2)])
		}
		frames = append(frames, samples.Ethernet(s))
		permissive = append(permissive, len(s.Ext) > 0 || tags > 2)
	}
	for _, expr := range programFilters {
		f, err := Parse(expr)
		if err != nil {
			t.Fatal(err)
		}
		vm := newVM(t, f, decode.LinkEthernet)
		var accepted, matched int
		for i, fr := range frames {
			user := userMatch(f, decode.LinkEthernet, fr)
			kernel := run(t, vm, fr)
			if user && !kernel {
				t.Fatalf("%q: program rejects frame %d (%x) that matches in user space", expr, i, fr)
			}
			if kernel && !user && !permissive[i] {
				t.Fatalf("%q: program accepts frame %d (%x) that does not match", expr, i, fr)
			}
			if kernel {
				accepted++
			}
			if user {
				matched++
			}
		}
		if matched == 0 {
			t.Errorf("%q matched no synthetic frame: the comparison proves nothing", expr)
		}
		t.Logf("%-45q matched %4d, kernel accepted %4d of %d", expr, matched, accepted, len(frames))
	}
}

// TestProgramOnSamples checks the kernel programs against the frames of the
// sample captures, re-framed as Ethernet where they were captured otherwise.
func TestProgramOnSamples(t *testing.T) {
	var frames [][]byte
	for _, path := range samples.Captures(t) {
		frames = append(frames, ethernetFrames(t, path)...)
	}
	for _, expr := range programFilters {
		f, _ := Parse(expr)
		vm := newVM(t, f, decode.LinkEthernet)
		n := 0
		for i, fr := range frames {
			user := userMatch(f, decode.LinkEthernet, fr)
			if kernel := run(t, vm, fr); user != kernel {
				t.Fatalf("%q: frame %d: kernel %v, user space %v", expr, i, kernel, user)
			}
			if user {
				n++
			}
		}
		t.Logf("%-45q %d of %d sample frames", expr, n, len(frames))
	}
}

// TestProgramNativeFraming checks the kernel programs compiled for each
// link type with a framing in decode's table against user space on frames
// of that link type: the sample captures as they are, their cooked frames
// with a VLAN tag inserted, and as Linux cooked v2.
func TestProgramNativeFraming(t *testing.T) {
	frames := map[decode.LinkType][][]byte{}
	for _, path := range samples.Captures(t) {
		for _, fr := range samples.Frames(t, path) {
			lt := decode.LinkType(fr.Link)
			frames[lt] = append(frames[lt], fr.Data)
			if lt != decode.LinkSLL || len(fr.Data) < 16 {
				continue
			}
			d := fr.Data
			tagged := append(append(append([]byte(nil), d[:14]...), 0x81, 0x00, 0, 7), d[14:]...)
			v2 := append(append([]byte(nil), d[14:16]...), 0, 0, 0, 0, 0, 1)
			v2 = append(append(append(v2, d[2:4]...), d[0:2]...), d[4:16]...)
			v2 = append(v2[:2+2+4+2+1+1+8], d[16:]...)
			frames[decode.LinkSLL] = append(frames[decode.LinkSLL], tagged)
			frames[decode.LinkSLL2] = append(frames[decode.LinkSLL2], v2)
		}
	}
	for lt, fs := range frames {
		if _, ok := lt.Framing(); !ok {
			continue
		}
		for _, expr := range programFilters {
			f, _ := Parse(expr)
			vm := newVM(t, f, lt)
			n := 0
			for i, fr := range fs {
				user := userMatch(f, lt, fr)
				if kernel := run(t, vm, fr); user != kernel {
					t.Fatalf("%v %q: frame %d (%x): kernel %v, user space %v", lt, expr, i, fr, kernel, user)
				}
				if user {
					n++
				}
			}
			t.Logf("%v %-45q %d of %d frames", lt, expr, n, len(fs))
		}
	}
	for _, lt := range []decode.LinkType{decode.LinkEthernet, decode.LinkSLL, decode.LinkSLL2, decode.LinkRaw} {
		if len(frames[lt]) == 0 {
			t.Errorf("no %v frame: its framing is not checked", lt)
		}
	}
	if _, err := (&Filter{}).Program(decode.LinkNull, ProgramOptions{}); err == nil {
		t.Error("a program for a link type without a framing compiled")
	}
}

func TestProgramRawIP(t *testing.T) {
	f, _ := Parse("dst port 80")
	vm := newVM(t, f, decode.LinkRaw)
	for _, tt := range []struct {
		s    samples.Spec
		want bool
	}{
		{samples.Spec{Src: netip.MustParseAddr("1.1.1.1"), Dst: netip.MustParseAddr("2.2.2.2"), DstPort: 80}, true},
		{samples.Spec{Src: netip.MustParseAddr("1.1.1.1"), Dst: netip.MustParseAddr("2.2.2.2"), DstPort: 81}, false},
		{samples.Spec{Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("::2"), DstPort: 80}, true},
		{samples.Spec{Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("::2"), DstPort: 80, Proto: 17}, false},
	} {
		if got := run(t, vm, samples.IP(tt.s)); got != tt.want {
			t.Errorf("%+v: accepted %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestProgramSkipOutgoing(t *testing.T) {
	f, _ := Parse("tcp")
	prog, err := f.Program(decode.LinkEthernet, ProgramOptions{Snaplen: 100, SkipOutgoing: true})
	if err != nil {
		t.Fatal(err)
	}
	first, ok := prog[0].(bpf.LoadExtension)
	if !ok || first.Num != bpf.ExtType {
		t.Fatalf("program starts with %v, want a load of the packet type", prog[0])
	}
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatal(err)
	}
}

func newVM(t *testing.T, f *Filter, lt decode.LinkType) *bpf.VM {
	t.Helper()
	prog, err := f.Program(lt, ProgramOptions{Snaplen: 262144})
	if err != nil {
		t.Fatalf("compile %q: %v", f, err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("load %q: %v", f, err)
	}
	return vm
}

func run(t *testing.T, vm *bpf.VM, frame []byte) bool {
	t.Helper()
	n, err := vm.Run(frame)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func userMatch(f *Filter, lt decode.LinkType, frame []byte) bool {
	var r record.Record
	return decode.Decode(lt, frame, &r) == decode.StatusOK && f.Match(&r)
}

// ethernetFrames reads a capture and returns its frames as Ethernet frames
// (an Ethernet header with zero addresses in front of the IP header for
// cooked, loopback and raw captures).
func ethernetFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out [][]byte
	var link decode.LinkType
	var next func() ([]byte, error)
	if strings.HasSuffix(path, ".pcapng") {
		r, err := pcapgo.NewNgReader(fh, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatal(err)
		}
		link = decode.LinkType(r.LinkType())
		next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
	} else {
		r, err := pcapgo.NewReader(fh)
		if err != nil {
			t.Fatal(err)
		}
		link = decode.LinkType(r.LinkType())
		next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
	}
	for {
		d, err := next()
		if err != nil {
			break // end of file, or the cut record of the truncated sample
		}
		var l3 []byte
		switch link {
		case decode.LinkEthernet:
			out = append(out, d)
			continue
		case decode.LinkSLL:
			l3 = d[16:]
		case decode.LinkNull:
			l3 = d[4:]
		case decode.LinkRaw:
			l3 = d
		default:
			t.Fatalf("%s: link type %v not handled by the test", path, link)
		}
		et := []byte{0x08, 0x00}
		if l3[0]>>4 == 6 {
			et = []byte{0x86, 0xdd}
		}
		fr := append(make([]byte, 12), et...)
		out = append(out, append(fr, l3...))
	}
	return out
}
