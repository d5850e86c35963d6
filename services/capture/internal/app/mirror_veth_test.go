//go:build linux

package app

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
)

// TestLiveVXLAN runs capture in mirror mode (DECAP=vxlan) on one end of a
// veth pair whose address is the mirror target, while N frames wrapped in
// VXLAN go in at the other end, and as many again to another address
// (which the kernel program keeps out): exactly N records come out, with
// the inner addresses and ports.
func TestLiveVXLAN(t *testing.T) {
	needRoot(t)
	lab := vethlab.ForTest(t, "cpm")
	const (
		n     = 20000
		flows = 32
		port  = 7311
	)
	target, elsewhere, source := net.IPv4(10, 78, 0, 2), net.IPv4(10, 78, 0, 9), net.IPv4(10, 78, 0, 1)
	if out, err := exec.Command("ip", "-n", lab.Rx, "addr", "add", "10.78.0.2/24", "dev", lab.RxIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	clearEnv(t)
	t.Setenv("DECAP", "vxlan")
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cfg.Interface, cfg.ListenAddr = lab.RxIf, fmt.Sprintf("%s:%d", vethlab.DstIP, port)
	cfg.Output, cfg.Stdout, cfg.MetricsAddr, cfg.CaptureWorkers = OutputStdout, &out, "", 1
	// Run opens its sockets in the capture namespace.
	info, cancel, errc := startWith(t, cfg, testLogger(t), func(run func() error) error { return vethlab.Do(lab.Rx, run) })
	defer cancel()
	for _, dst := range []net.IP{elsewhere, target} {
		in, err := vethlab.NewInjector(lab.Tx, lab.TxIf, flows, port, 64)
		if err != nil {
			t.Fatal(err)
		}
		in.WrapVXLAN(source, dst, 4242)
		_, err = in.Run(n, 100000)
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && len(out.Lines()) < n; {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * cfg.RingTimeout) // an extra record would show now
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	lines := out.Lines()
	srcs := map[string]bool{}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 7 || f[2] != vethlab.DstIP.String() || f[4] != strconv.Itoa(port) || f[6] != "40" {
			t.Fatalf("record %q: want the inner packet to %s:%d, ip_len 40", l, vethlab.DstIP, port)
		}
		srcs[f[1]+":"+f[3]] = true
	}
	if len(lines) != n || len(srcs) != flows {
		t.Fatalf("%d records of %d inner connections; sent %d frames of %d in VXLAN to %v", len(lines), len(srcs), n, flows, target)
	}
	if p := counter(t, info.Registry, "connpipe_capture_packets_total"); p != n {
		t.Errorf("packets_total %v, want %d: the kernel program let tunnels to another address in", p, n)
	}
	if r := tunnelCount(t, info.Registry, "recorded"); r != n {
		t.Errorf("tunnel frames recorded %v, want %d", r, n)
	}
	if d := counter(t, info.Registry, "connpipe_capture_kernel_drops_total"); d != 0 {
		t.Errorf("%v kernel drops", d)
	}
}
