package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// pcapDir is where the sample capture the replay is made from lives: this
// package's testdata (a copy of services/capture/testdata/pcaps/
// eth-ipv4-http-get.pcap), or CONNPIPE_PCAPS.
func pcapDir(tb testing.TB) string {
	if d := os.Getenv("CONNPIPE_PCAPS"); d != "" {
		return d
	}
	return "testdata"
}

// bigCapture writes n Ethernet/IPv4/TCP packets made from the real HTTP
// capture, each with a different source address (10.x.y.z) and a fresh
// timestamp, so the replay has the shape of many clients.
func bigCapture(tb testing.TB, n int) string {
	tb.Helper()
	f, err := os.Open(filepath.Join(pcapDir(tb), "eth-ipv4-http-get.pcap"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var frames [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		frames = append(frames, append([]byte(nil), data...))
	}
	path := filepath.Join(tb.TempDir(), "big.pcap")
	out, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	w := pcapgo.NewWriter(out)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		tb.Fatal(err)
	}
	base := time.Now()
	for i := range n {
		frame := append([]byte(nil), frames[i%len(frames)]...)
		frame[26], frame[27], frame[28], frame[29] = 10, byte(i>>16), byte(i>>8), byte(i)
		ci := capInfo(base.Add(time.Duration(i)*time.Microsecond), len(frame))
		if err := w.WritePacket(ci, frame); err != nil {
			tb.Fatal(err)
		}
	}
	return path
}

// BenchmarkPipelineReplay replays a large capture through capture →
// RabbitMQ → two consumers → two Redis instances as fast as it goes and
// reports end-to-end records/s, capture's own read-and-decode rate, and the
// Redis ceiling for the same write pattern measured with redis-benchmark.
func BenchmarkPipelineReplay(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CONNPIPE_BENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	path := bigCapture(b, n)
	for b.Loop() {
		// Capture alone: read, decode, print to /dev/null.
		t0 := time.Now()
		cmd := exec.Command(filepath.Join(binDir, "capture"), "-r", path)
		cmd.Stdout = io.Discard
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("capture -r: %v\n%s", err, stderr.String())
		}
		decode := float64(n) / time.Since(t0).Seconds()

		s := newSystem(b, map[string]string{"RETENTION": "2m"})
		s.startConsumer("consumer-1")
		s.startConsumer("consumer-2")
		t1 := time.Now()
		s.capAddr = fmt.Sprintf("127.0.0.1:%d", freePort(b))
		start(b, "capture", "capture", s.with(map[string]string{"PCAP_FILES": path, "METRICS_ADDR": s.capAddr}))
		waitFor(b, 5*time.Minute, "all records stored", func() (bool, string) {
			var total float64
			for _, c := range s.consumers {
				a, bb := c.split(b)
				total += a + bb
			}
			return total >= float64(n), fmt.Sprintf("%.0f stored", total)
		})
		e2e := float64(n) / time.Since(t1).Seconds()
		ceiling := redisCeiling(b, s.redis[1])
		b.ReportMetric(e2e, "e2e-records/s")
		b.ReportMetric(decode, "capture-decode-records/s")
		b.ReportMetric(ceiling, "redis-ceiling-records/s")
		b.ReportMetric(e2e/ceiling, "e2e/ceiling")
	}
}

// redisCeiling measures with redis-benchmark how many records/s one Redis
// takes in the consumer's write pattern: APPEND of a 512-entry blob (the
// capture batch size, 25 bytes an IPv4 entry) with PEXPIREAT, in one script
// call, 4 connections, pipelined by 8.
func redisCeiling(b *testing.B, addr string) float64 {
	host, port, _ := strings.Cut(addr, ":")
	blob := strings.Repeat("x", 512*25)
	script := "redis.call('APPEND',KEYS[1],ARGV[1]) redis.call('PEXPIREAT',KEYS[1],ARGV[2]) return 1"
	deadline := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-n", "10000", "-r", "1000", "-c", "4", "-P", "8", "-q",
		"EVAL", script, "1", "cpbench:r:__rand_int__", blob, deadline).CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`([0-9.]+) requests per second`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("redis-benchmark said: %s", out)
	}
	ops, _ := strconv.ParseFloat(string(m[1]), 64)
	return ops * 512
}

func capInfo(ts time.Time, n int) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: ts, CaptureLength: n, Length: n}
}
