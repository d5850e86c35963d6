//go:build linux

package app

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
)

// TestRingVethExact runs capture (OUTPUT=stdout) on one end of a veth pair
// with 1 and with 2 readers while exactly N frames of 64 connections go in
// at the other end: N records come out, each connection's in the order it
// was sent (its timestamps never go back), and the drop counters stay 0.
func TestRingVethExact(t *testing.T) {
	needRoot(t)
	lab := vethlab.ForTest(t, "cpa")
	const (
		n     = 30000
		flows = 64
		port  = 7211
	)
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("CAPTURE_WORKERS=%d", workers), func(t *testing.T) {
			clearEnv(t)
			cfg, err := LoadConfig(nil, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var out lockedBuffer
			cfg.Interface, cfg.ListenAddr = lab.RxIf, fmt.Sprintf("%s:%d", vethlab.DstIP, port)
			cfg.Output, cfg.Stdout, cfg.MetricsAddr, cfg.CaptureWorkers = OutputStdout, &out, "", workers
			// Run opens its sockets in the capture namespace.
			info, cancel, errc := startWith(t, cfg, testLogger(t), func(run func() error) error { return vethlab.Do(lab.Rx, run) })
			defer cancel()
			in, err := vethlab.NewInjector(lab.Tx, lab.TxIf, flows, port, 64)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			if _, err := in.Run(n, 100000); err != nil {
				t.Fatal(err)
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
			last := map[string]int64{}
			for _, l := range lines {
				f := strings.Split(l, "\t")
				if len(f) != 7 || f[2] != vethlab.DstIP.String() || f[4] != strconv.Itoa(port) {
					t.Fatalf("record %q", l)
				}
				ts, _ := strconv.ParseInt(f[0], 10, 64)
				conn := f[1] + ":" + f[3]
				if ts < last[conn] {
					t.Fatalf("connection %s: record at %d after one at %d", conn, ts, last[conn])
				}
				last[conn] = ts
			}
			drops := counter(t, info.Registry, "connpipe_capture_kernel_drops_total")
			if len(lines) != n || len(last) != flows || drops != 0 {
				t.Fatalf("%d records of %d connections, %v kernel drops; sent %d frames of %d", len(lines), len(last), drops, n, flows)
			}
			if p := counter(t, info.Registry, "connpipe_capture_packets_total"); p != n {
				t.Fatalf("packets_total %v, want %d", p, n)
			}
		})
	}
}
