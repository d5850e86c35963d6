//go:build linux

package app

import (
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/publish"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/services/capture/internal/textout"
	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
	"github.com/connpipe/connpipe/shared/ops"
	"github.com/connpipe/connpipe/shared/record"
)

// ringBlock lays out frames crafted by vethlab (256 flows to port) in a
// TPACKET_V3 block of size bytes the way the kernel does, as many as fit,
// and returns the block and the number of frames.
func ringBlock(size int, port uint16) ([]byte, int) {
	const hdr, mac = 48, 82 // block header; tp_mac of an Ethernet frame
	ne := binary.NativeEndian
	b := make([]byte, size)
	off, prev, n := hdr, -1, 0
	for {
		step := (mac + vethlab.FrameLen + 7) &^ 7
		if off+step > size {
			break
		}
		h := b[off:]
		ne.PutUint32(h[4:], 1_700_000_000)
		ne.PutUint32(h[8:], uint32(n))
		ne.PutUint32(h[12:], vethlab.FrameLen)
		ne.PutUint32(h[16:], vethlab.FrameLen)
		ne.PutUint32(h[20:], 1) // TP_STATUS_USER
		ne.PutUint16(h[24:], mac)
		vethlab.Craft(h[mac:], n%256, port, uint32(n/256))
		ne.PutUint32(h[0:], uint32(step))
		prev, off = off, off+step
		n++
	}
	ne.PutUint32(b[prev:], 0)
	ne.PutUint32(b[8:], 1)
	ne.PutUint32(b[12:], uint32(n))
	ne.PutUint32(b[16:], hdr)
	ne.PutUint32(b[20:], uint32(off))
	return b, n
}

type countOutput struct{ n int }

func (c *countOutput) Add(context.Context, *record.Record) error { c.n++; return nil }

func (c *countOutput) AddAll(_ context.Context, recs []record.Record) error {
	c.n += len(recs)
	return nil
}

// benchRing measures a reader's work on 1 MiB blocks of 60-byte frames
// (decode, filter, count, hand to out), without the socket.
func benchRing(b *testing.B, out output) {
	const port = 7210
	blk, n := ringBlock(1<<20, port)
	flt := filter.FromListen(netip.AddrPortFrom(netip.AddrFrom4([4]byte(vethlab.DstIP)), port))
	r := &ringReader{
		link: decode.LinkEthernet,
		p:    newFrames(decode.Tunnels{}, flt, out, nil, maxHeld, discardLogger()),
		m:    newMetrics(ops.NewRegistry()),
	}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		k := source.ParseBlock(blk)
		if err := r.consume(ctx, &k); err != nil {
			b.Fatal(err)
		}
		if k.Fault() != source.FaultNone {
			b.Fatal(k.Fault())
		}
	}
	// CPU time rather than wall time: the machine may be shared.
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(n*b.N), "cpu-ns/packet")
}

// cpuTime is the process's user and system CPU time in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func BenchmarkRingReaderCount(b *testing.B) {
	c := &countOutput{}
	benchRing(b, c)
	if c.n == 0 {
		b.Fatal("no record reached the output")
	}
}

func BenchmarkRingReaderText(b *testing.B) {
	t := textout.New(io.Discard)
	defer t.Close(context.Background())
	benchRing(b, t.Part()) // as a live reader prints
}

func BenchmarkRingReaderBatcher(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bt := publish.NewBatcher(ctx, 512, time.Hour)
	go func() {
		for range bt.Out() {
		}
	}()
	benchRing(b, bt)
	_ = bt.Close(ctx)
}

// BenchmarkRingReadersText runs a reader per processor, each on its own
// blocks, all printing to one text output as live readers do. With -cpu
// 1,2 its packets/s shows how far readers spread over cores.
func BenchmarkRingReadersText(b *testing.B) {
	const port = 7210
	blk, n := ringBlock(1<<20, port)
	out := textout.New(io.Discard)
	defer out.Close(context.Background())
	flt := filter.FromListen(netip.AddrPortFrom(netip.AddrFrom4([4]byte(vethlab.DstIP)), port))
	m := newMetrics(ops.NewRegistry())
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		r := &ringReader{link: decode.LinkEthernet, p: newFrames(decode.Tunnels{}, flt, out.Part(), nil, maxHeld, discardLogger()), m: m}
		for pb.Next() {
			k := source.ParseBlock(blk)
			if err := r.consume(ctx, &k); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
