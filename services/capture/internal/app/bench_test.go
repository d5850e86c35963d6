package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// bigPcap writes n Ethernet frames cycled from the HTTP sample, each from
// its own source address, to a pcap file.
func bigPcap(b *testing.B, n int) string {
	frames := samples.Frames(b, filepath.Join(samples.Dir(b), "eth-ipv4-http-get.pcap"))
	path := filepath.Join(b.TempDir(), "big.pcap")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		b.Fatal(err)
	}
	base := time.Unix(1_700_000_000, 0)
	for i := range n {
		fr := append([]byte(nil), frames[i%len(frames)].Data...)
		fr[26], fr[27], fr[28], fr[29] = 10, byte(i>>16), byte(i>>8), byte(i)
		ci := gopacket.CaptureInfo{Timestamp: base.Add(time.Duration(i) * time.Microsecond), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// BenchmarkReplayToText reads, decodes, filters and prints (to io.Discard)
// a 200,000-packet capture through Run: the rate of `capture -r FILE`.
func BenchmarkReplayToText(b *testing.B) {
	const n = 200_000
	path := bigPcap(b, n)
	b.Setenv("LOG_LEVEL", "warn")
	cfg, err := LoadConfig([]string{"-r", path}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Stdout = io.Discard
	b.ReportAllocs()
	for b.Loop() {
		if err := Run(context.Background(), cfg, discardLogger()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkReplayFiltered is the same replay with a filter that drops every
// packet (no output): the rate of reading and decoding alone.
func BenchmarkReplayFiltered(b *testing.B) {
	const n = 200_000
	path := bigPcap(b, n)
	cfg, err := LoadConfig([]string{"-r", path, "-f", "dst port 1"}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Stdout = io.Discard
	b.ReportAllocs()
	for b.Loop() {
		if err := Run(context.Background(), cfg, discardLogger()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "packets/s")
}
