package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var update = flag.Bool("update", false, "rewrite testdata/golden with tshark (cmd/golden/golden.sh)")

const goldenDir = "../../testdata/golden"

// goldenLine is one line of a golden file: the seven record columns and
// whether the packet must be recorded (strict) or may be counted malformed.
type goldenLine struct {
	text   string
	strict bool
}

func readGolden(t *testing.T, name string) []goldenLine {
	t.Helper()
	return readGoldenIn(t, goldenDir, name)
}

func readGoldenIn(t *testing.T, dir, name string) []goldenLine {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name+".tsv"))
	if err != nil {
		t.Fatalf("golden file: %v (generate with cmd/golden/golden.sh)", err)
	}
	var out []goldenLine
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "\t")
		if len(f) != 8 {
			t.Fatalf("%s: golden line %q has %d columns, want 8", name, l, len(f))
		}
		out = append(out, goldenLine{text: strings.Join(f[:7], "\t"), strict: f[7] == "1"})
	}
	return out
}

// lockedBuffer collects OUTPUT=stdout lines written from another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// replay runs capture over files with OUTPUT=stdout and returns the lines,
// Run's error and the final metrics.
func replay(t *testing.T, files []string, filter, listen string) ([]string, error, *prometheus.Registry) {
	t.Helper()
	t.Setenv("LOG_LEVEL", "info")
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	var reg *prometheus.Registry
	cfg.PcapFiles, cfg.Output, cfg.MetricsAddr, cfg.Stdout = files, OutputStdout, "", &out
	cfg.BPFFilter = filter
	if listen != "" {
		cfg.ListenAddr = listen
	}
	cfg.Ready = func(i Info) { reg = i.Registry }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = Run(ctx, cfg, testLogger(t))
	return out.Lines(), err, reg
}

// start runs capture with cfg in the background and returns once it is
// ready (within 10s); cancel stops it and runErr then gives Run's result.
func start(t *testing.T, cfg Config, log *slog.Logger) (info Info, cancel context.CancelFunc, runErr <-chan error) {
	t.Helper()
	return startWith(t, cfg, log, func(run func() error) error { return run() })
}

// startWith is start with Run called through in (to run it in a network
// namespace, say).
func startWith(t *testing.T, cfg Config, log *slog.Logger, in func(func() error) error) (info Info, cancel context.CancelFunc, runErr <-chan error) {
	t.Helper()
	ready := make(chan Info, 1)
	cfg.Ready = func(i Info) { ready <- i }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- in(func() error { return Run(ctx, cfg, log) }) }()
	select {
	case info = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("capture not ready after 10s")
	}
	return info, cancel, errc
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return counterWhere(t, reg, name, func(*dto.Metric) bool { return true })
}

// counterWhere is metric name summed over the series keep selects.
func counterWhere(t *testing.T, reg *prometheus.Registry, name string, keep func(*dto.Metric) bool) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if keep(m) {
				total += value(m)
			}
		}
		return total
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// checkGolden compares records with golden lines: every strict line in
// order; a non-strict line may be missing (counted malformed instead).
func checkGolden(t *testing.T, name string, got []string, want []goldenLine) {
	t.Helper()
	i := 0
	for _, w := range want {
		if i < len(got) && got[i] == w.text {
			i++
			continue
		}
		if w.strict {
			t.Fatalf("%s: record %d:\n got  %q\n want %q\nall records:\n%s", name, i, at(got, i), w.text, strings.Join(got, "\n"))
		}
	}
	if i != len(got) {
		t.Fatalf("%s: %d extra records from %q on", name, len(got)-i, got[i])
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// TestGoldenReplay replays every sample capture and compares the records
// with testdata/golden/NAME.tsv (made by tshark, see cmd/golden/golden.sh).
func TestGoldenReplay(t *testing.T) {
	captures := samples.Captures(t)
	if *update {
		out, err := execGolden(filepath.Dir(captures[0]), "")
		if err != nil {
			t.Fatalf("golden.sh: %v\n%s", err, out)
		}
	}
	for _, path := range captures {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			want := readGolden(t, name)
			got, err, reg := replay(t, []string{path}, "tcp", "")
			if name == "eth-ipv4-cut-mid-record.pcap" {
				var te *source.TruncatedError
				if !errors.As(err, &te) || !errors.Is(err, source.ErrTruncated) {
					t.Fatalf("error %v, want a TruncatedError", err)
				}
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "truncated") || te.Offset != 2120 {
					t.Fatalf("error %q should name %s, say truncated and give byte 2120", err, path)
				}
				if len(got) != 6 {
					t.Fatalf("%d records before the cut, want 6", len(got))
				}
			} else if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkGolden(t, name, got, want)
			checkAccounted(t, reg, len(got))
		})
	}
}

// checkAccounted checks that every frame read is accounted for exactly
// once: packets = records + filtered + Σ decode errors.
func checkAccounted(t *testing.T, reg *prometheus.Registry, records int) {
	t.Helper()
	packets := counter(t, reg, "connpipe_capture_packets_total")
	rest := counter(t, reg, "connpipe_capture_decode_errors_total") + counter(t, reg, "connpipe_capture_filtered_total") + float64(records)
	if packets == 0 || packets != rest {
		t.Fatalf("packets_total %v != decode errors + filtered + records %v", packets, rest)
	}
}

const craftedDir = "../../testdata/crafted"

// TestCraftedGolden replays the crafted captures (testdata/crafted, made
// by cmd/gencrafted) and compares the records with the lines tshark gives
// for them (testdata/crafted/golden, made by cmd/golden/golden.sh): more
// link layers, offloaded IP lengths, odd TCP headers and out-of-range
// timestamps.
func TestCraftedGolden(t *testing.T) {
	captures, err := filepath.Glob(filepath.Join(craftedDir, "*.pcap*"))
	if err != nil || len(captures) == 0 {
		t.Fatalf("no crafted captures in %s (%v)", craftedDir, err)
	}
	if *update {
		out, err := execGolden(craftedDir, filepath.Join(craftedDir, "golden"))
		if err != nil {
			t.Fatalf("golden.sh: %v\n%s", err, out)
		}
	}
	for _, path := range captures {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			want := readGoldenIn(t, filepath.Join(craftedDir, "golden"), name)
			if len(want) == 0 {
				t.Fatal("the golden file lists no packet: the test proves nothing")
			}
			got, err, reg := replay(t, []string{path}, "tcp", "")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkGolden(t, name, got, want)
			checkAccounted(t, reg, len(got))
		})
	}
}

// TestGoldenAgreesWithTruth checks the tshark goldens against the truth
// files shipped beside the captures.
func TestGoldenAgreesWithTruth(t *testing.T) {
	for _, path := range samples.Captures(t) {
		name := filepath.Base(path)
		truth, err := os.ReadFile(path + ".truth.tsv")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		golden, err := os.ReadFile(filepath.Join(goldenDir, name+".tsv"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(truth, golden) {
			t.Errorf("%s: golden file differs from %s", name, path+".truth.tsv")
		}
	}
}

func TestReplayFilter(t *testing.T) {
	dir := samples.Dir(t)
	tests := []struct {
		file, filter, listen string
		keep                 func(f []string) bool
	}{
		{"eth-ipv4-http-get.pcap", "dst port 80", "", func(f []string) bool { return f[4] == "80" }},
		{"eth-ipv4-http-get.pcap", "src host 192.150.187.43 and src port 80", "", func(f []string) bool { return f[1] == "192.150.187.43" && f[3] == "80" }},
		{"vlan-ipv4-http.pcap", "", "192.150.187.43:80", func(f []string) bool { return f[2] == "192.150.187.43" && f[4] == "80" }},
		{"vlan-ipv4-http.pcap", "", "0.0.0.0:80", func(f []string) bool { return f[4] == "80" }},
		{"null-ipv6-loopback.pcap", "", "[::1]:8080", func(f []string) bool { return f[2] == "::1" && f[4] == "8080" }},
		{"null-ipv6-loopback.pcap", "ip", "", func(f []string) bool { return false }},
		{"sll-ipv6-bgp.pcapng", "ip6 and port 179", "", func(f []string) bool { return f[3] == "179" || f[4] == "179" }},
		{"eth-ipv4-dns.pcap", "dst port 53", "", func(f []string) bool { return f[4] == "53" }},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.filter+tt.listen, func(t *testing.T) {
			var want []goldenLine
			for _, l := range readGolden(t, tt.file) {
				if tt.keep(strings.Split(l.text, "\t")) {
					want = append(want, l)
				}
			}
			got, err, _ := replay(t, []string{filepath.Join(dir, tt.file)}, tt.filter, tt.listen)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 && tt.filter != "ip" {
				t.Fatal("the filter keeps no golden line: the test proves nothing")
			}
			checkGolden(t, tt.file, got, want)
		})
	}
}

// TestReplaySeveralFiles reads two files in one run, in order.
func TestReplaySeveralFiles(t *testing.T) {
	dir := samples.Dir(t)
	a, b := "raw-ipv4-rst.pcap", "sll-ipv4-nanosecond.pcap"
	got, err, _ := replay(t, []string{filepath.Join(dir, a), filepath.Join(dir, b)}, "tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, a+"+"+b, got, append(readGolden(t, a), readGolden(t, b)...))
}

// TestTruncatedPcapng cuts the pcapng sample inside its last block.
func TestTruncatedPcapng(t *testing.T) {
	src := filepath.Join(samples.Dir(t), "sll-ipv6-bgp.pcapng")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{5, 30} {
		path := filepath.Join(t.TempDir(), "cut.pcapng")
		if err := os.WriteFile(path, data[:len(data)-cut], 0o644); err != nil {
			t.Fatal(err)
		}
		got, err, _ := replay(t, []string{path}, "tcp", "")
		var te *source.TruncatedError
		if !errors.As(err, &te) || !strings.Contains(err.Error(), path) {
			t.Fatalf("cut %d: error %v, want a TruncatedError naming %s", cut, err, path)
		}
		want := readGolden(t, "sll-ipv6-bgp.pcapng")
		if len(got) > len(want) || len(got) == 0 {
			t.Fatalf("cut %d: %d records", cut, len(got))
		}
		checkGolden(t, "cut", got, want[:len(got)])
		t.Logf("cut %d bytes: %v", cut, err)
	}
}

// TestTruncatedInRecordHeader cuts a pcap inside a record header.
func TestTruncatedInRecordHeader(t *testing.T) {
	src := filepath.Join(samples.Dir(t), "raw-ipv4-rst.pcap")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// 24-byte file header, then 16+caplen per record: keep the first record
	// and 10 bytes of the second record's header.
	first := 24 + 16 + 44
	path := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(path, data[:first+10], 0o644); err != nil {
		t.Fatal(err)
	}
	got, err, _ := replay(t, []string{path}, "tcp", "")
	var te *source.TruncatedError
	if !errors.As(err, &te) || te.Offset != int64(first) || te.Packets != 1 {
		t.Fatalf("error %v, want truncated at byte %d after 1 packet", err, first)
	}
	if len(got) != 1 {
		t.Fatalf("%d records, want 1", len(got))
	}
}

func TestNotACaptureFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("hello, this is not a capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err, _ := replay(t, []string{path}, "tcp", "")
	if !errors.Is(err, source.ErrNotCapture) || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v, want ErrNotCapture naming the file", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSummaryCountsEveryFrame: a file whose TCP frames all fail to decode
// (here, a link type capture does not read) must say so at its end, by
// reason, not just packets=11 records=0 filtered=0.
func TestSummaryCountsEveryFrame(t *testing.T) {
	tcp := filepath.Join(samples.Dir(t), "raw-ipv4-rst.pcap")
	frames := samples.Frames(t, tcp)
	// 11 frames of the raw sample's IPv4 packets written as
	// LINKTYPE_IEEE802_5 (6, Token Ring), which neither the fast decoder
	// nor gopacket's decoders read; then the raw sample itself, whose
	// packets are recorded.
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 6)
	for i := range 11 {
		d := frames[i%len(frames)].Data
		b = binary.LittleEndian.AppendUint32(b, uint32(1700000000+i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(d)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(d)))
		b = append(b, d...)
	}
	path := filepath.Join(t.TempDir(), "token-ring.pcap")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}

	var logs lockedBuffer
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	var reg *prometheus.Registry
	cfg.PcapFiles, cfg.Output, cfg.MetricsAddr, cfg.Stdout, cfg.BPFFilter = []string{path, tcp}, OutputStdout, "", &out, "tcp"
	cfg.Ready = func(i Info) { reg = i.Registry }
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := Run(context.Background(), cfg, log); err != nil {
		t.Fatal(err)
	}
	got := out.Lines()
	checkGolden(t, "raw-ipv4-rst.pcap", got, readGolden(t, "raw-ipv4-rst.pcap"))
	checkAccounted(t, reg, len(got))
	var summary string
	for _, l := range logs.Lines() {
		if strings.Contains(l, `msg="capture files read"`) {
			summary = l
		}
	}
	want := fmt.Sprintf("packets=%d records=%d published=%d filtered=0 malformed=11 malformed_by_reason.unsupported_link=11", 11+len(frames), len(got), len(got))
	if !strings.Contains(summary, want) {
		t.Fatalf("summary %q, want it to say %q", summary, want)
	}
	if n := counter(t, reg, "connpipe_capture_decode_errors_total"); n != 11 {
		t.Fatalf("decode_errors_total %v, want 11", n)
	}
}
