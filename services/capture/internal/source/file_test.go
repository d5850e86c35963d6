package source

import (
	"context"
	"errors"
	"io"
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
