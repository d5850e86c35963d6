//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/app"
	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
	"github.com/connpipe/connpipe/shared/testenv"
)

// lines are the lines written to b so far.
func lines(b *testenv.Buffer) []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}

// TestMirrorToCapture is the compose stack's MIRROR=1 path on one host:
// frames for a listen address arrive on a veth; vxlanmirror copies them in
// VXLAN to 127.0.0.1:4789; capture in mirror mode on lo records the packets
// inside: exactly N records, to the listen address.
func TestMirrorToCapture(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (network namespaces, AF_PACKET) and CI runs as root")
		}
		t.Skip("needs root: network namespaces and AF_PACKET")
	}
	lab := vethlab.ForTest(t, "cpv")
	const (
		n     = 5000
		flows = 16
		port  = 7411
	)
	listen := fmt.Sprintf("%s:%d", vethlab.DstIP, port)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for _, kv := range [][2]string{{"DECAP", "vxlan"}, {"INTERFACE", "lo"}, {"LISTEN_ADDR", listen}, {"OUTPUT", "stdout"}, {"METRICS_ADDR", ""}, {"CAPTURE_WORKERS", "1"}} {
		t.Setenv(kv[0], kv[1])
	}
	cfg, err := app.LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out testenv.Buffer
	cfg.Stdout = &out
	capReady, mirReady := make(chan struct{}), make(chan struct{})
	cfg.Ready = func(app.Info) { close(capReady) }
	errc := make(chan error, 2)
	go func() { errc <- vethlab.Do(lab.Rx, func() error { return app.Run(ctx, cfg, log) }) }()
	go func() {
		c := config{iface: lab.RxIf, listen: listen, target: "127.0.0.1:4789", vni: 77}
		errc <- vethlab.Do(lab.Rx, func() error { return run(ctx, c, func() { close(mirReady) }, log) })
	}()
	for _, ready := range []chan struct{}{capReady, mirReady} {
		select {
		case <-ready:
		case err := <-errc:
			t.Fatalf("not ready: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("not ready after 10s")
		}
	}
	in, err := vethlab.NewInjector(lab.Tx, lab.TxIf, flows, port, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Run(n, 20000); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && len(lines(&out)) < n; {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // an extra record would show now
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("run: %v", err)
		}
	}
	got := lines(&out)
	for _, l := range got {
		if f := strings.Split(l, "\t"); len(f) != 7 || f[2] != vethlab.DstIP.String() || f[4] != fmt.Sprint(port) {
			t.Fatalf("record %q: want the packet inside, to %s", l, listen)
		}
	}
	if len(got) != n {
		t.Fatalf("%d records, want %d", len(got), n)
	}
}
