package app

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/shared/testenv"
)

// TestSpoolReplayWaitsForBroker replays the samples with the broker cut
// off (the proxy refuses): the records go to the spool, /healthz says the
// broker is unreachable, Run waits; once the proxy is back the spool
// drains and Run returns, every golden record in the queue.
func TestSpoolReplayWaitsForBroker(t *testing.T) {
	u := testenv.AMQP(t)
	proxy := startProxy(t, proxyPortReplay, brokerAddr(t, u))
	proxy.Cut()
	var files []string
	var want []goldenLine
	strict := 0
	for _, p := range samples.Captures(t) {
		if filepath.Base(p) == "eth-ipv4-cut-mid-record.pcap" {
			continue
		}
		files = append(files, p)
		want = append(want, readGolden(t, filepath.Base(p))...)
	}
	for _, g := range want {
		if g.strict {
			strict++
		}
	}
	clearSpoolEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL, cfg.PcapFiles, cfg.BPFFilter, cfg.MetricsAddr = via(t, u, proxy.Addr), files, "tcp", "127.0.0.1:0"
	cfg.BatchSize, cfg.SpoolDir = 7, t.TempDir()
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	reg := info.Registry
	waitFor(t, 10*time.Second, "the replay's records did not reach the spool", func() bool {
		return counter(t, reg, "connpipe_capture_spool_written_records_total") >= float64(strict) &&
			counter(t, reg, "connpipe_capture_packets_total") > 0
	})
	code, body := healthz(t, info.MetricsAddr)
	if code != 503 || !strings.Contains(body, "unreachable") {
		t.Fatalf("/healthz with the broker away: %d %q", code, body)
	}
	select {
	case err := <-runErr:
		t.Fatalf("Run returned with the broker away: %v", err)
	case <-time.After(time.Second):
	}
	proxy.Restore(t)
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not finish after the broker came back")
	}
	// In order: the spool keeps it. No dedupe: the samples hold packets
	// captured twice, and nothing here makes capture publish a batch twice.
	var got []string
	for _, r := range storedRecords(t, u) {
		got = append(got, r.String())
	}
	checkGolden(t, "all samples through the spool", got, want)
	if c := counter(t, reg, "connpipe_capture_spool_records"); c != 0 {
		t.Fatalf("%v records left in the spool", c)
	}
	if c := counter(t, reg, "connpipe_capture_spool_drained_records_total"); int(c) != len(got) {
		t.Fatalf("%v records drained from the spool, %d stored", c, len(got))
	}
	t.Logf("%d records replayed through the spool", len(got))
}

// TestSpoolConfig: the spool's variables are checked at start and named.
func TestSpoolConfig(t *testing.T) {
	for _, tt := range []struct{ env, val string }{
		{"SPOOL_FULL_POLICY", "drop-random"},
		{"SPOOL_FSYNC", "sometimes"},
		{"SPOOL_MAX_BYTES", "1000"},
		{"SPOOL_MAX_BYTES", "lots"},
	} {
		t.Run(tt.env+"="+tt.val, func(t *testing.T) {
			clearSpoolEnv(t)
			t.Setenv(tt.env, tt.val)
			_, err := LoadConfig(nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.env) {
				t.Fatalf("%s=%q: %v", tt.env, tt.val, err)
			}
		})
	}
	clearSpoolEnv(t)
	c, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SpoolDir != "" || c.SpoolMaxBytes != 1<<30 || c.SpoolFullPolicy != "drop-newest" || c.SpoolFsync != "interval" {
		t.Fatalf("spool defaults %q %d %q %q", c.SpoolDir, c.SpoolMaxBytes, c.SpoolFullPolicy, c.SpoolFsync)
	}
	// A spool directory held by another capture is refused at start.
	dir := t.TempDir()
	c.SpoolDir, c.MetricsAddr, c.ShutdownTimeout = dir, "", 200*time.Millisecond
	c.PcapFiles, c.BPFFilter = []string{filepath.Join(samples.Dir(t), "eth-ipv4-dns.pcap")}, "tcp"
	c.AMQPURL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg2 := c
	ready := make(chan struct{})
	c.Ready = func(Info) { close(ready) }
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, discardLogger()) }()
	<-ready
	if err := Run(ctx, cfg2, discardLogger()); err == nil || !strings.Contains(err.Error(), "SPOOL_DIR") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second capture on the same SPOOL_DIR: %v", err)
	}
	cancel()
	<-done
}
