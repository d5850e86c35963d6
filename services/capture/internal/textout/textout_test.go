package textout

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
)

// recs are records of every shape the text form has: IPv4 and IPv6, a
// key column or none, extreme values, and the zero record.
var recs = []record.Record{
	{TS: 1_700_000_000_000_000_000, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), DstPort: 7000, Flags: record.FlagSYN, IPLen: 60},
	{TS: 1_700_000_000_000_000_001, Src: netip.MustParseAddr("10.0.255.255"), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: 65535, DstPort: 7000, Flags: record.FlagSYN, IPLen: 60, Key: "k1"},
	{TS: -5, Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("2001:db8::ff"), SrcPort: 0, DstPort: 65535, Flags: 0x1ff, IPLen: 65535, Key: "abc"},
	{TS: 1, Src: netip.MustParseAddr("::ffff:1.2.3.4"), Dst: netip.MustParseAddr("fe80::1"), Flags: 0xabcd},
	{},
	{TS: 1_700_000_000_000_000_000, Src: netip.MustParseAddr("fe80::1%eth0"), Dst: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), SrcPort: 9, DstPort: 99, IPLen: 999},
	{TS: 1_700_000_000_000_000_000, Src: netip.MustParseAddr("::ffff:255.255.255.255"), Dst: netip.MustParseAddr("255.255.255.255"), SrcPort: 9999, DstPort: 10000, IPLen: 100},
}

func TestWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf testenv.Buffer
		tx := New(&buf)
		_ = tx.Add(context.Background(), &recs[0])
		_ = tx.Add(context.Background(), &recs[1])
		if buf.String() != "" {
			t.Fatal("written before the flush delay")
		}
		time.Sleep(FlushDelay)
		synctest.Wait()
		want := recs[0].String() + "\n" + recs[1].String() + "\n"
		if buf.String() != want {
			t.Fatalf("got %q, want %q", buf.String(), want)
		}
		if !strings.HasSuffix(strings.Split(buf.String(), "\n")[1], "\tk1") {
			t.Fatal("key column missing")
		}
		_ = tx.Close(context.Background())
	})
}

// TestAppend: the allocation-free text form equals Record.String.
func TestAppend(t *testing.T) {
	for _, r := range recs {
		var f lineFormat
		if got, want := string(f.append(nil, &r)), r.String(); got != want {
			t.Errorf("Append %q, String %q", got, want)
		}
	}
	var f lineFormat
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { _ = f.append(buf[:0], &recs[2]) }); n > 1 {
		t.Errorf("Append allocates %v times", n)
	}
}

// TestLinesMatchString: one Writer's lines, over records whose times
// cross second boundaries, jump back, and sit at the edges of the
// remembered-seconds path, each equal Record.String.
func TestLinesMatchString(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var in []record.Record
	for _, ts := range []int64{0, 1, 999_999_999, 1_000_000_000, 1_000_000_001, 1_999_999_999, 2_000_000_000,
		1_700_000_000_000_000_000, 1_700_000_000_999_999_999, 1_700_000_001_000_000_000, 1_700_000_000_000_000_009,
		math.MaxInt64, math.MinInt64, -1_000_000_000} {
		in = append(in, record.Record{TS: ts})
	}
	ts := int64(1_700_000_000_000_000_000)
	for range 20000 {
		ts += rng.Int64N(3_000_000) - 500_000 // mostly forward, now and then back
		r := record.Record{TS: ts, SrcPort: uint16(rng.Uint32()), DstPort: uint16(rng.Uint32()),
			Flags: uint16(rng.Uint32()), IPLen: rng.Uint32N(200000)}
		var a4 [4]byte
		binary.BigEndian.PutUint32(a4[:], rng.Uint32())
		r.Src = netip.AddrFrom4(a4)
		switch rng.IntN(4) {
		case 0:
			var a16 [16]byte
			binary.BigEndian.PutUint64(a16[:], rng.Uint64())
			binary.BigEndian.PutUint64(a16[8:], rng.Uint64()&0xffff)
			r.Dst = netip.AddrFrom16(a16)
		case 1:
			r.Dst = netip.AddrFrom16(netip.AddrFrom4(a4).As16()) // ::ffff:a.b.c.d
			r.Key = "key"
		default:
			r.Dst = netip.AddrFrom4([4]byte{byte(rng.IntN(10)), 0, 99, 255})
		}
		in = append(in, r)
	}
	var buf bytes.Buffer
	w := New(&buf)
	var want strings.Builder
	for i := range in {
		if err := w.Add(context.Background(), &in[i]); err != nil {
			t.Fatal(err)
		}
		want.WriteString(in[i].String() + "\n")
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, wantLines := strings.Split(buf.String(), "\n"), strings.Split(want.String(), "\n")
	if len(got) != len(wantLines) {
		t.Fatalf("%d lines, want %d", len(got), len(wantLines))
	}
	for i := range got {
		if got[i] != wantLines[i] {
			t.Fatalf("line %d: %q, want %q", i, got[i], wantLines[i])
		}
	}
}

// TestWriteErrorSticks: a failed write is returned by that Add and every
// call after it.
func TestWriteErrorSticks(t *testing.T) {
	w := New(failWriter{})
	var err error
	for i := 0; err == nil && i < 10000; i++ {
		err = w.Add(context.Background(), &recs[0])
	}
	if !errors.Is(err, errFull) {
		t.Fatalf("Add after the buffer filled: %v", err)
	}
	if err := w.Add(context.Background(), &recs[0]); !errors.Is(err, errFull) {
		t.Fatalf("next Add: %v", err)
	}
	if err := w.Close(context.Background()); !errors.Is(err, errFull) {
		t.Fatalf("Close: %v", err)
	}
}

var errFull = errors.New("device full")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errFull }

// BenchmarkWriter is the per-record cost of OUTPUT=stdout: one record
// after another of a live capture, one microsecond apart.
func BenchmarkWriter(b *testing.B) {
	w := New(io.Discard)
	r := recs[0]
	b.ReportAllocs()
	for b.Loop() {
		r.TS += 1000
		_ = w.Add(context.Background(), &r)
	}
}

// TestFlushDisarmsTheTimer: a Flush (a drained ring) writes the lines
// and the flush timer does not fire after it; AddAll prints in order.
func TestFlushDisarmsTheTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &countingWriter{}
		tx := New(w)
		if err := tx.AddAll(context.Background(), recs[:2]); err != nil {
			t.Fatal(err)
		}
		if err := tx.Flush(); err != nil {
			t.Fatal(err)
		}
		if want := recs[0].String() + "\n" + recs[1].String() + "\n"; w.buf.String() != want || w.writes != 1 {
			t.Fatalf("after Flush: %d writes of %q, want one of %q", w.writes, w.buf.String(), want)
		}
		if tx.timer.Stop() {
			t.Fatal("flush timer still armed after Flush: it would wake the process for nothing")
		}
		_ = tx.Close(context.Background())
	})
}

// countingWriter counts Write calls.
type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.buf.Write(p)
}

// TestPartWritesOnFlushOrWhenFull: a Part arms no timer. Its lines wait
// for Flush however long that takes, a full buffer is written out without
// one, and the parent's Close flushes it.
func TestPartWritesOnFlushOrWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &countingWriter{}
		parent := New(w)
		tx := parent.Part()
		if err := tx.AddAll(context.Background(), recs[:2]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * FlushDelay)
		synctest.Wait()
		if w.writes != 0 {
			t.Fatalf("%d writes before Flush: a timer fired", w.writes)
		}
		if err := tx.Flush(); err != nil {
			t.Fatal(err)
		}
		if want := recs[0].String() + "\n" + recs[1].String() + "\n"; w.buf.String() != want || w.writes != 1 {
			t.Fatalf("after Flush: %d writes of %q, want one of %q", w.writes, w.buf.String(), want)
		}
		r := recs[0]
		line := len(r.String()) + 1
		for range bufSize/line + 1 {
			if err := tx.Add(context.Background(), &r); err != nil {
				t.Fatal(err)
			}
		}
		if w.writes != 2 || w.buf.Len() < line+bufSize {
			t.Fatalf("a full buffer: %d writes, %d bytes in all; want 2 writes and at least %d bytes",
				w.writes, w.buf.Len(), line+bufSize)
		}
		before := w.buf.Len()
		if err := tx.Add(context.Background(), &recs[1]); err != nil {
			t.Fatal(err)
		}
		if err := parent.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := w.buf.String()[before:]; got != recs[1].String()+"\n" {
			t.Fatalf("parent's Close wrote %q of its part, want %q", got, recs[1].String()+"\n")
		}
	})
}

// TestPartsInterleaveWholeLines: parts printing at the same time from
// their own goroutines write whole lines, and each part's lines come out
// in the order it added them.
func TestPartsInterleaveWholeLines(t *testing.T) {
	var out testenv.Buffer
	parent := New(&out)
	const parts, per = 4, 20000
	var wg sync.WaitGroup
	for p := range parts {
		part := parent.Part()
		wg.Go(func() {
			r := record.Record{Src: netip.AddrFrom4([4]byte{10, 0, 0, byte(p)}), Dst: netip.MustParseAddr("127.0.0.1"), DstPort: 7000, IPLen: 60}
			batch := make([]record.Record, 0, 100)
			for i := range per {
				r.TS = 1_700_000_000_000_000_000 + int64(i)
				if batch = append(batch, r); len(batch) == cap(batch) {
					if err := part.AddAll(context.Background(), batch); err != nil {
						t.Error(err)
						return
					}
					batch = batch[:0]
				}
			}
		})
	}
	wg.Wait()
	if err := parent.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	next := map[string]int64{}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for n, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("line %d is not a whole line: %q", n+1, l)
		}
		ts, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		if want := 1_700_000_000_000_000_000 + next[f[1]]; ts != want {
			t.Fatalf("line %d from %s: ts %d, want %d (out of order)", n+1, f[1], ts, want)
		}
		next[f[1]]++
	}
	if len(lines) != parts*per || len(next) != parts {
		t.Fatalf("%d lines from %d sources, want %d from %d", len(lines), len(next), parts*per, parts)
	}
}
