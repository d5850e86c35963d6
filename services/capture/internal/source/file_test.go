package source

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/samples"
)

// TestFilesMatchGopacket: every packet of every sample comes out with the
// timestamp, link type and bytes that gopacket's readers give.
func TestFilesMatchGopacket(t *testing.T) {
	for _, path := range samples.Captures(t) {
		want := samples.Frames(t, path)
		f := NewFiles([]string{path}, 0)
		var got []Packet
		var err error
		for {
			var p Packet
			p, err = f.Next(context.Background())
			if err != nil {
				break
			}
			p.Data = append([]byte(nil), p.Data...)
			got = append(got, p)
		}
		f.Close()
		if !errors.Is(err, io.EOF) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("%s: %v", path, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d packets, gopacket reads %d", path, len(got), len(want))
		}
		for i := range got {
			if got[i].TS != want[i].TS || got[i].Link != decode.LinkType(want[i].Link) || string(got[i].Data) != string(want[i].Data) {
				t.Fatalf("%s: packet %d differs", path, i)
			}
		}
	}
}

// TestReplaySpeed replays at the recorded speed, twice it and flat out, in
// a synctest bubble: the replay takes the file's time span divided by the
// speed.
func TestReplaySpeed(t *testing.T) {
	path := filepath.Join(samples.Dir(t), "eth-ipv4-http-get.pcap")
	frames := samples.Frames(t, path)
	span := time.Duration(frames[len(frames)-1].TS - frames[0].TS)
	for _, speed := range []float64{1, 2, 0.5, 0} {
		t.Run(strconv.FormatFloat(speed, 'g', -1, 64), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := NewFiles([]string{path}, speed)
				defer f.Close()
				start := time.Now()
				var at []time.Duration
				for {
					p, err := f.Next(context.Background())
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					at = append(at, time.Since(start))
					_ = p
				}
				want := time.Duration(0)
				if speed > 0 {
					want = time.Duration(float64(span) / speed)
				}
				if got := time.Since(start); got != want {
					t.Fatalf("replay took %v, want %v", got, want)
				}
				if speed > 0 {
					for i, d := range at {
						w := time.Duration(float64(frames[i].TS-frames[0].TS) / speed)
						if d != w {
							t.Fatalf("packet %d delivered at %v, want %v", i, d, w)
						}
					}
				}
			})
		})
	}
}

// TestReplayStopsOnCancel: a paced replay waiting for a packet's time
// returns when its context ends.
func TestReplayStopsOnCancel(t *testing.T) {
	path := filepath.Join(samples.Dir(t), "eth-ipv4-http-get.pcap")
	synctest.Test(t, func(t *testing.T) {
		f := NewFiles([]string{path}, 0.001) // 1000 times slower
		defer f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := f.Next(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next: %v, want the context's deadline", err)
		}
	})
}

// TestPcapFractionPastOneSecond reads records whose fraction of a second is
// 10⁶ µs (10⁹ ns) or more, from little- and big-endian, plain and gzipped
// pcap files. The times are the ones tshark 4.0 gives for them (see
// testdata/crafted/README.md): the fraction, scaled to nanoseconds in 32
// bits and taken as signed, carried into the seconds.
func TestPcapFractionPastOneSecond(t *testing.T) {
	const sec = 1700000000
	tests := []struct {
		frac uint32
		nano bool
		want int64
	}{
		{999999, false, 1700000000999999000},
		{1000000, false, 1700000001000000000},
		{1500000, false, 1700000001500000000},
		{2147483, false, 1700000002147483000},
		{2999999, false, 1699999998705031704}, // 2999999000 ns wraps in 32 bits
		{4294967, false, 1699999999999999704},
		{4294968, false, 1700000000000000704},
		{4294967295, false, 1699999999999999000},
		{999999999, true, 1700000000999999999},
		{1000000000, true, 1700000001000000000},
		{2147483647, true, 1700000002147483647},
		{2999999999, true, 1699999998705032703},
		{4294967295, true, 1699999999999999999},
	}
	for _, order := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		for _, gz := range []bool{false, true} {
			for _, nano := range []bool{false, true} {
				var want []int64
				var recs [][2]uint32
				for _, tt := range tests {
					if tt.nano == nano {
						want = append(want, tt.want)
						recs = append(recs, [2]uint32{sec, tt.frac})
					}
				}
				name := fmt.Sprintf("%v gzip=%v nano=%v", order, gz, nano)
				path := filepath.Join(t.TempDir(), "ts.pcap")
				if err := os.WriteFile(path, pcapFile(t, order, nano, gz, recs), 0o644); err != nil {
					t.Fatal(err)
				}
				f, err := OpenFile(path)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				for i, w := range want {
					p, err := f.Next(context.Background())
					if err != nil {
						t.Fatalf("%s: record %d: %v", name, i, err)
					}
					if p.TS != w || p.Link != decode.LinkRaw || p.Len != 40 {
						t.Errorf("%s: fraction %d: ts %d link %v len %d, want ts %d, raw, 40", name, recs[i][1], p.TS, p.Link, p.Len, w)
					}
				}
				if _, err := f.Next(context.Background()); !errors.Is(err, io.EOF) {
					t.Fatalf("%s: after the last record: %v", name, err)
				}
				f.Close()
			}
		}
	}
}

// pcapFile writes a pcap file of raw IPv4 records (40 bytes each) stamped
// recs (seconds, fraction).
func pcapFile(t *testing.T, order binary.AppendByteOrder, nano, gz bool, recs [][2]uint32) []byte {
	magic := uint32(magicPcapMicro)
	if nano {
		magic = magicPcapNano
	}
	b := order.AppendUint32(nil, magic)
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 65535)
	b = order.AppendUint32(b, uint32(decode.LinkRaw))
	for _, r := range recs {
		b = order.AppendUint32(b, r[0])
		b = order.AppendUint32(b, r[1])
		b = order.AppendUint32(b, 40)
		b = order.AppendUint32(b, 40)
		b = append(b, 0x45, 0, 0, 40)
		b = append(b, make([]byte, 36)...)
	}
	if !gz {
		return b
	}
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestPcapWireLength: a record's length on the wire comes with the packet.
func TestPcapWireLength(t *testing.T) {
	path := filepath.Join(samples.Dir(t), "eth-ipv4-snapped.pcap")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := f.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p.Len <= len(p.Data) {
		t.Fatalf("wire length %d, captured %d: the sample is cut by the snapshot length", p.Len, len(p.Data))
	}
}
