package publish

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

func rec(i int) *record.Record {
	return &record.Record{
		TS: int64(1_700_000_000_000_000_000 + i), Src: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
		Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: uint16(i), DstPort: 7000, Flags: record.FlagSYN, IPLen: 60,
	}
}

func decodeBatch(t *testing.T, b Batch) []record.Record {
	t.Helper()
	var out record.Batch
	if err := record.DecodeBinary(b.Body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Ingest != b.Ingest || len(out.Records) != b.Records {
		t.Fatalf("batch header ingest %d records %d, want %d %d", out.Ingest, len(out.Records), b.Ingest, b.Records)
	}
	return out.Records
}

func TestBatcherCountAndTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := NewBatcher(ctx, 3, 50*time.Millisecond)
		start := time.Now()
		for i := range 7 {
			if err := b.Add(ctx, rec(i)); err != nil {
				t.Fatal(err)
			}
			if i == 2 {
				// The first batch is full: it is sent at once.
				bt := <-b.Out()
				if got := decodeBatch(t, bt); len(got) != 3 || got[0].SrcPort != 0 || got[2].SrcPort != 2 {
					t.Fatalf("first batch %v", got)
				}
				if bt.Ingest != start.UnixNano() {
					t.Fatalf("ingest %d, want the batch's start %d", bt.Ingest, start.UnixNano())
				}
			}
		}
		second := <-b.Out()
		if len(decodeBatch(t, second)) != 3 {
			t.Fatal("second batch not full")
		}
		// The seventh record waits for the interval.
		time.Sleep(49 * time.Millisecond)
		synctest.Wait()
		select {
		case bt := <-b.Out():
			t.Fatalf("batch of %d sent before the interval", bt.Records)
		default:
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		third := <-b.Out()
		if got := decodeBatch(t, third); len(got) != 1 || got[0].SrcPort != 6 || *rec(6) != got[0] {
			t.Fatalf("third batch %v", got)
		}
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-b.Out(); ok {
			t.Fatal("Out not closed")
		}
		if err := b.Add(ctx, rec(9)); !errors.Is(err, ErrClosed) {
			t.Fatalf("Add after Close: %v", err)
		}
	})
}

// TestBatcherTimerCountsFromFirstRecord: a batch is sent interval after
// its own first record, not after an earlier batch's.
func TestBatcherTimerCountsFromFirstRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := NewBatcher(ctx, 2, 100*time.Millisecond)
		_ = b.Add(ctx, rec(0))
		time.Sleep(60 * time.Millisecond)
		_ = b.Add(ctx, rec(1)) // fills and sends the first batch
		<-b.Out()
		_ = b.Add(ctx, rec(2))
		t0 := time.Now()
		bt := <-b.Out()
		if d := time.Since(t0); d != 100*time.Millisecond {
			t.Fatalf("second batch sent after %v, want 100ms", d)
		}
		if bt.Records != 1 {
			t.Fatalf("%d records", bt.Records)
		}
		_ = b.Close(ctx)
	})
}

// TestBatcherBackPressure: with nobody draining Out, Add blocks; when its
// context ends the full batch is kept and Close delivers it, so no record
// that Add took is lost.
func TestBatcherBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(context.Background(), 2, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for i := range 4 { // batch 1 fills Out's buffer; batch 2 cannot be sent
			err := b.Add(ctx, rec(i))
			if i < 3 && err != nil {
				t.Fatalf("Add %d: %v", i, err)
			}
			if i == 3 && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Add of a record that fills a batch nobody takes: %v", err)
			}
		}
		if h := b.Held(); h != 2 {
			t.Fatalf("Held() = %d, want the 2 records of the batch that could not be sent", h)
		}
		_ = b.Add(context.Background(), rec(4)) // starts a new batch behind the held one
		if h := b.Held(); h != 3 {
			t.Fatalf("Held() = %d, want 3", h)
		}
		var got []record.Record
		done := make(chan struct{})
		go func() {
			defer close(done)
			for bt := range b.Out() {
				got = append(got, decodeBatch(t, bt)...)
			}
		}()
		if err := b.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-done
		if len(got) != 5 {
			t.Fatalf("%d records delivered, want 5", len(got))
		}
		for i, r := range got {
			if r.SrcPort != uint16(i) {
				t.Fatalf("record %d is %v: out of order", i, r)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	var enc record.Encoder
	r := rec(7)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%512 == 0 {
			enc.Reset(int64(i))
		}
		r.SrcPort = uint16(i)
		enc.Add(r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBatcherAdd measures the per-record cost on the reader's side,
// batches being taken as fast as they come.
func BenchmarkBatcherAdd(b *testing.B) {
	ctx := context.Background()
	bt := NewBatcher(ctx, 512, time.Hour)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range bt.Out() {
		}
	}()
	r := rec(7)
	b.ReportAllocs()
	for b.Loop() {
		_ = bt.Add(ctx, r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	_ = bt.Close(ctx)
	<-done
}

// TestBatcherAddAll: AddAll makes the batches that Add, record by record,
// makes: full ones at once, in order, the rest on the timer.
func TestBatcherAddAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := NewBatcher(ctx, 4, 50*time.Millisecond)
		var recs []record.Record
		for i := range 10 {
			recs = append(recs, *rec(i))
		}
		got := make(chan []record.Record, 3)
		go func() {
			for bt := range b.Out() {
				got <- decodeBatch(t, bt)
			}
			close(got)
		}()
		if err := b.AddAll(ctx, recs); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if len(got) != 2 {
			t.Fatalf("%d batches sent at once, want the 2 full ones", len(got))
		}
		time.Sleep(50 * time.Millisecond)
		synctest.Wait()
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
		var all []record.Record
		var sizes []int
		for bt := range got {
			all = append(all, bt...)
			sizes = append(sizes, len(bt))
		}
		if len(sizes) != 3 || sizes[0] != 4 || sizes[1] != 4 || sizes[2] != 2 {
			t.Fatalf("batch sizes %v, want [4 4 2]", sizes)
		}
		for i := range recs {
			if all[i] != recs[i] {
				t.Fatalf("record %d: %v, want %v", i, all[i], recs[i])
			}
		}
		if err := b.AddAll(ctx, recs[:1]); !errors.Is(err, ErrClosed) {
			t.Fatalf("AddAll after Close: %v", err)
		}
	})
}

// Every batch is named by the batcher's producer and the next sequence
// number; a second batcher is another producer.
func TestBatcherNamesBatches(t *testing.T) {
	ctx := context.Background()
	ids := func() []record.ID {
		b := NewBatcher(ctx, 2, 0)
		var got []record.ID
		var first []uint64
		go func() {
			for i := range 6 {
				_ = b.Add(ctx, rec(i))
			}
			_ = b.Close(ctx)
		}()
		for bt := range b.Out() {
			var out record.Batch
			if err := record.DecodeBinary(bt.Body, &out); err != nil {
				t.Fatal(err)
			}
			got = append(got, out.ID)
			first = append(first, out.First)
		}
		if len(first) != 3 || first[0] != 0 || first[1] != 2 || first[2] != 4 {
			t.Fatalf("batches start at records %v of the stream, want [0 2 4]", first)
		}
		return got
	}
	a, c := ids(), ids()
	if len(a) != 3 || len(c) != 3 {
		t.Fatalf("got %d and %d batches, want 3 each", len(a), len(c))
	}
	for i, id := range a {
		if id.Producer == 0 || id.Producer != a[0].Producer || id.Seq != uint64(i+1) {
			t.Fatalf("batch %d named %+v, want producer %x seq %d", i, id, a[0].Producer, i+1)
		}
	}
	if c[0].Producer == a[0].Producer {
		t.Fatalf("two batchers share producer %x", a[0].Producer)
	}
}
