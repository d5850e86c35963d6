//go:build linux

package app

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/services/capture/internal/spool"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
)

// Ports of the spool tests (5700-5799 are theirs).
const (
	proxyPortOutage = 5701
	proxyPortKill   = 5702
	proxyPortFull   = 5703
	proxyPortReplay = 5704
	metricsPortKill = 5712
	privateAMQPPort = 5790
)

// brokerAddr is host:port of the test broker behind an AMQP URL.
func brokerAddr(t *testing.T, amqpURL string) string {
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestSpoolBrokerOutage cuts capture off the broker (a proxy of the test's
// own that closes every connection and refuses new ones) under live
// traffic on lo at about 4,000 packets/s. Capture keeps reading into the
// spool, /healthz says so, and after the proxy is back the spool drains:
// the records in the queue are exactly the packets the test's own raw
// socket saw (duplicates aside), with no kernel drop and the spool empty.
func TestSpoolBrokerOutage(t *testing.T) {
	needRoot(t)
	outage := outageDuration(t)
	u := testenv.AMQP(t)
	proxy := startProxy(t, proxyPortOutage, brokerAddr(t, u))
	port := freePort(t)
	witness := startRawCounter(t, port)
	clearSpoolEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL = via(t, u, proxy.Addr)
	cfg.Interface, cfg.ListenAddr, cfg.Sink = "lo", fmt.Sprintf("127.0.0.1:%d", port), true
	cfg.MetricsAddr, cfg.SpoolDir = "127.0.0.1:0", t.TempDir()
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	waitHealthy(t, info.MetricsAddr)
	reg := info.Registry

	stop := traffic(t, cfg.ListenAddr, 4, time.Millisecond)
	time.Sleep(2 * time.Second)
	if counter(t, reg, "connpipe_capture_records_live_total") == 0 {
		t.Fatal("no record went live before the outage")
	}
	proxy.Cut()
	cutAt := time.Now()
	readAtCut := counter(t, reg, "connpipe_capture_packets_total")
	waitFor(t, 10*time.Second, "the spool never filled during the outage", func() bool {
		return counter(t, reg, "connpipe_capture_spool_records") > 0
	})
	code, body := healthz(t, info.MetricsAddr)
	if code != 503 || !strings.Contains(body, "unreachable") || !strings.Contains(body, "spool") {
		t.Fatalf("/healthz during the outage: %d %q, want 503 saying the broker is unreachable and the spool fills", code, body)
	}
	time.Sleep(time.Until(cutAt.Add(outage)))
	read := counter(t, reg, "connpipe_capture_packets_total") - readAtCut
	spooled := counter(t, reg, "connpipe_capture_spool_records")
	age := counter(t, reg, "connpipe_capture_spool_oldest_age_seconds")
	t.Logf("outage of %s: capture read %.0f packets (%.0f/s), %.0f records in the spool, oldest %.1fs",
		outage, read, read/outage.Seconds(), spooled, age)
	if read < outage.Seconds()*1000 {
		t.Fatalf("capture read only %.0f packets in a %s outage: the reader waited for the broker", read, outage)
	}
	if age < outage.Seconds()/2 {
		t.Fatalf("oldest spooled record %.1fs old after a %s outage", age, outage)
	}
	proxy.Restore(t)
	time.Sleep(3 * time.Second) // traffic goes on while the spool drains
	sent := stop()
	seen := settle(witness)
	waitFor(t, 60*time.Second, "the spool did not drain", func() bool {
		return counter(t, reg, "connpipe_capture_spool_records") == 0 && counter(t, reg, "connpipe_capture_spool_bytes") == 0 &&
			counter(t, reg, "connpipe_capture_packets_total") >= float64(len(seen))
	})
	if code, body := healthz(t, info.MetricsAddr); code != 200 {
		t.Fatalf("/healthz after the outage: %d %q", code, body)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := counter(t, reg, "connpipe_capture_kernel_drops_total"); d != 0 {
		t.Fatalf("%v kernel drops", d)
	}
	if d := counter(t, reg, "connpipe_capture_spool_dropped_total"); d != 0 {
		t.Fatalf("the spool dropped %v records", d)
	}
	if f, _ := filepath.Glob(filepath.Join(cfg.SpoolDir, "seg-*")); len(f) != 0 {
		t.Fatalf("spool files left: %v", f)
	}
	drained := counter(t, reg, "connpipe_capture_spool_drained_records_total")
	live := counter(t, reg, "connpipe_capture_records_live_total")
	stored, dups := dedupe(storedRecords(t, u))
	if diff := diffMultiset(stored, seen); diff != "" {
		t.Fatal(diff)
	}
	if drained < spooled {
		t.Fatalf("%v records drained from the spool, %v were in it", drained, spooled)
	}
	t.Logf("%d writes sent, %d packets seen, %d records stored (+%d duplicates); %.0f live, %.0f through the spool",
		sent, len(seen), len(stored), dups, live, drained)
}

// TestSpoolFullDropNewest: a spool of 64 KiB with drop-newest through an
// outage. Every record it could not hold is counted: dropped = packets
// seen - records stored.
func TestSpoolFullDropNewest(t *testing.T) {
	needRoot(t)
	u := testenv.AMQP(t)
	proxy := startProxy(t, proxyPortFull, brokerAddr(t, u))
	port := freePort(t)
	witness := startRawCounter(t, port)
	clearSpoolEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL = via(t, u, proxy.Addr)
	cfg.Interface, cfg.ListenAddr, cfg.Sink = "lo", fmt.Sprintf("127.0.0.1:%d", port), true
	cfg.MetricsAddr, cfg.SpoolDir = "127.0.0.1:0", t.TempDir()
	cfg.SpoolMaxBytes, cfg.SpoolFullPolicy = 64<<10, "drop-newest"
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	waitHealthy(t, info.MetricsAddr)
	reg := info.Registry

	stop := traffic(t, cfg.ListenAddr, 4, time.Millisecond)
	time.Sleep(time.Second)
	proxy.Cut()
	waitFor(t, 20*time.Second, "the spool never dropped", func() bool {
		return counter(t, reg, "connpipe_capture_spool_dropped_total") > 1000
	})
	if b := counter(t, reg, "connpipe_capture_spool_bytes"); b > 64<<10 {
		t.Fatalf("spool holds %v bytes, SPOOL_MAX_BYTES is %d", b, 64<<10)
	}
	proxy.Restore(t)
	time.Sleep(time.Second)
	stop()
	seen := settle(witness)
	waitFor(t, 60*time.Second, "the spool did not drain", func() bool {
		return counter(t, reg, "connpipe_capture_spool_records") == 0 && counter(t, reg, "connpipe_capture_spool_bytes") == 0 &&
			counter(t, reg, "connpipe_capture_packets_total") >= float64(len(seen))
	})
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := counter(t, reg, "connpipe_capture_kernel_drops_total"); d != 0 {
		t.Fatalf("%v kernel drops", d)
	}
	dropped := counter(t, reg, "connpipe_capture_spool_dropped_total")
	stored, dups := dedupe(storedRecords(t, u))
	// Nothing stored that was not seen...
	count := map[string]int{}
	for _, w := range seen {
		count[w]++
	}
	for i := range stored {
		k := witnessKey(&stored[i])
		if count[k]--; count[k] < 0 {
			t.Fatalf("stored record %q was never seen", k)
		}
	}
	// ...and every packet seen but not stored was counted as dropped.
	if int(dropped) != len(seen)-len(stored) {
		t.Fatalf("dropped_total %v, but %d packets seen - %d records stored = %d", dropped, len(seen), len(stored), len(seen)-len(stored))
	}
	t.Logf("%d packets seen, %d records stored (+%d duplicates), %v dropped by the full spool", len(seen), len(stored), dups, dropped)
}

// child is capture running as its own process (the test binary re-run
// with childEnv).
type child struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func startChild(t *testing.T, env []string) *child {
	t.Helper()
	c := &child{out: &bytes.Buffer{}}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), append([]string{childEnv + "=1"}, env...)...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("capture process output:\n%s", c.out)
		}
	})
	return c
}

// appendTorn adds half an entry to the newest segment file in dir: what a
// kill in the middle of a write leaves.
func appendTorn(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "seg-*.spool"))
	if len(files) == 0 {
		t.Fatal("no spool segment to tear")
	}
	f, err := os.OpenFile(files[len(files)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hdr [20]byte
	binary.LittleEndian.PutUint32(hdr[0:], 5000)
	binary.LittleEndian.PutUint32(hdr[4:], 200)
	if _, err := f.Write(append(hdr[:], make([]byte, 1234)...)); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolSurvivesKill runs capture as a process, cuts the broker off
// under live traffic, kills capture with SIGKILL during the outage, tears
// the spool's last entry as a kill mid-write would, and starts capture
// again with the broker back: every record that was in the spool at the
// kill is stored, the torn entry is counted, and nothing stored was not
// seen.
func TestSpoolSurvivesKill(t *testing.T) {
	needRoot(t)
	outage := outageDuration(t)
	u := testenv.AMQP(t)
	proxy := startProxy(t, proxyPortKill, brokerAddr(t, u))
	port := freePort(t)
	witness := startRawCounter(t, port)
	dir := t.TempDir()
	metrics := fmt.Sprintf("127.0.0.1:%d", metricsPortKill)
	env := []string{
		"AMQP_URL=" + via(t, u, proxy.Addr), "INTERFACE=lo", fmt.Sprintf("LISTEN_ADDR=127.0.0.1:%d", port),
		"SINK=true", "METRICS_ADDR=" + metrics, "SPOOL_DIR=" + dir, "LOG_LEVEL=info", "BPF_FILTER=",
		"SPOOL_FSYNC=never",
	}
	first := startChild(t, env)
	waitHealthy(t, metrics)
	stop := traffic(t, fmt.Sprintf("127.0.0.1:%d", port), 4, time.Millisecond)
	time.Sleep(2 * time.Second)
	proxy.Cut()
	time.Sleep(outage / 2)
	if n := scrape(t, metrics, "connpipe_capture_spool_records"); n < 1000 {
		t.Fatalf("%v records in the spool after %s of outage", n, outage/2)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	stop()
	seen := settle(witness)

	// What reached the spool before the kill.
	inSpool := map[string]bool{}
	if err := spool.Scan(dir, func(e spool.Entry) {
		var b record.Batch
		if err := record.DecodeBinary(e.Body, &b); err != nil {
			t.Fatalf("spooled batch: %v", err)
		}
		for _, r := range b.Records {
			inSpool[r.String()] = true
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(inSpool) < 1000 {
		t.Fatalf("%d records in the spool after the kill", len(inSpool))
	}
	appendTorn(t, dir)

	time.Sleep(outage / 2)
	proxy.Restore(t)
	// The traffic has stopped, so the second capture needs no listener:
	// while the first was down, the port may have gone to another
	// process's connection.
	// (exec takes the last of a repeated variable.)
	second := startChild(t, append(slices.Clone(env), "SINK=false"))
	waitFor(t, 60*time.Second, "the spool did not drain after the restart", func() bool {
		code, _ := healthz(t, metrics)
		return code == 200 && scrape(t, metrics, "connpipe_capture_spool_records") == 0 &&
			scrape(t, metrics, "connpipe_capture_spool_bytes") == 0
	})
	if c := scrape(t, metrics, "connpipe_capture_spool_corrupt_batches_total"); c != 1 {
		t.Fatalf("corrupt_batches_total %v, want the 1 torn entry", c)
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.cmd.Wait(); err != nil {
		t.Fatalf("capture after SIGTERM: %v", err)
	}

	all, dups := dedupe(storedRecords(t, u))
	storedSet := map[string]bool{}
	for _, r := range all {
		storedSet[r.String()] = true
	}
	missing := 0
	for k := range inSpool {
		if !storedSet[k] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of the %d records in the spool at the kill were not stored", missing, len(inSpool))
	}
	count := map[string]int{}
	for _, w := range seen {
		count[w]++
	}
	for i := range all {
		k := witnessKey(&all[i])
		if count[k]--; count[k] < 0 {
			t.Fatalf("stored record %q was never seen", k)
		}
	}
	if f, _ := filepath.Glob(filepath.Join(dir, "seg-*")); len(f) != 0 {
		t.Fatalf("spool files left: %v", f)
	}
	t.Logf("%d packets seen, %d records in the spool at the kill, all stored; %d stored in all (+%d duplicates)",
		len(seen), len(inSpool), len(all), dups)
}

// TestSpoolStoppedAndStartedAgain: a replay into a broker that is away is
// stopped (context ended, as by SIGTERM) with its records in the spool; a
// capture started later on the same SPOOL_DIR, with the broker back, sends
// them first.
func TestSpoolStoppedAndStartedAgain(t *testing.T) {
	needRoot(t)
	u := testenv.AMQP(t)
	proxy := startProxy(t, proxyPortReplay, brokerAddr(t, u))
	proxy.Cut()
	file := filepath.Join(samples.Dir(t), "eth-ipv4-http-get.pcap")
	want := readGolden(t, filepath.Base(file))
	clearSpoolEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.AMQPURL, cfg.PcapFiles, cfg.BPFFilter, cfg.MetricsAddr = via(t, u, proxy.Addr), []string{file}, "tcp", "127.0.0.1:0"
	cfg.BatchSize, cfg.SpoolDir, cfg.ShutdownTimeout = 3, dir, time.Minute
	info, cancel, runErr := start(t, cfg, testLogger(t))
	waitFor(t, 10*time.Second, "the replay's records did not reach the spool", func() bool {
		return counter(t, info.Registry, "connpipe_capture_spool_written_records_total") >= float64(len(want))
	})
	// With the broker away there is nothing to wait for: the stop does
	// not take SHUTDOWN_TIMEOUT.
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run stopped with everything in the spool: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run waited for a broker that is away (SHUTDOWN_TIMEOUT 1m)")
	}
	if n := counter(t, info.Registry, "connpipe_capture_spool_records"); int(n) != len(want) {
		t.Fatalf("%v records in the spool at the stop, want %d", n, len(want))
	}

	// Started again: live on lo, no traffic, the broker back.
	proxy.Restore(t)
	cfg2 := cfg
	cfg2.PcapFiles, cfg2.BPFFilter = nil, ""
	cfg2.Interface, cfg2.ListenAddr = "lo", fmt.Sprintf("127.0.0.1:%d", freePort(t))
	info2, cancel2, runErr2 := start(t, cfg2, testLogger(t))
	defer cancel2()
	waitFor(t, 30*time.Second, "the spool was not sent after the start", func() bool {
		return counter(t, info2.Registry, "connpipe_capture_spool_records") == 0 &&
			counter(t, info2.Registry, "connpipe_capture_spool_drained_records_total") >= float64(len(want))
	})
	cancel2()
	if err := <-runErr2; err != nil {
		t.Fatalf("second Run: %v", err)
	}
	var got []string
	for _, r := range storedRecords(t, u) {
		got = append(got, r.String())
	}
	checkGolden(t, "records spooled by a stopped capture", got, want)
	if f, _ := filepath.Glob(filepath.Join(dir, "seg-*")); len(f) != 0 {
		t.Fatalf("spool files left: %v", f)
	}
}
