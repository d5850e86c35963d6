package publish

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/spool"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// benchBatch is a batch of 512 IPv4 records, BATCH_SIZE's default.
func benchBatch() Batch {
	var enc record.Encoder
	now := time.Now().UnixNano()
	enc.Reset(now)
	r := record.Record{Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("10.9.8.7"), DstPort: 7000, Flags: 0x18, IPLen: 60}
	for i := range 512 {
		r.TS, r.SrcPort = now+int64(i), uint16(40000+i)
		enc.Add(&r)
	}
	return Batch{Body: append([]byte(nil), enc.Bytes()...), Records: 512, Ingest: now}
}

// benchShipper runs a shipper over a fresh spool into the test broker.
// The timer starts once the spool is filled and the publisher is connected.
func benchShipper(b *testing.B, prefill int, in <-chan Batch) (*spool.Spool, *ShipperMetrics, *Metrics, func() error) {
	b.Helper()
	u := testenv.AMQP(b)
	reg := prometheus.NewRegistry()
	sm := spool.NewMetrics(reg)
	sp, err := spool.Open(spool.Options{Dir: b.TempDir(), MaxBytes: 64 << 30, Fsync: spool.FsyncInterval, Metrics: sm})
	if err != nil {
		b.Fatal(err)
	}
	bt := benchBatch()
	for range prefill {
		if err := sp.Append(spool.Entry{Body: bt.Body, Records: bt.Records, Ingest: bt.Ingest}); err != nil {
			b.Fatal(err)
		}
	}
	pm := NewMetrics(reg)
	pub := NewPublisher(PublisherConfig{URL: u, Name: "capture-bench", MaxInFlight: 32, Metrics: pm})
	shm := NewShipperMetrics(reg, sm.Drained)
	sh := NewShipper(ShipperConfig{Spool: sp, Publisher: pub, Metrics: shm})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	done := make(chan error, 1)
	// The clock starts once connected (dialing is not the rate).
	go func() { done <- sh.Run(ctx, in) }()
	for !pub.Connected() {
		time.Sleep(100 * time.Microsecond)
	}
	b.ResetTimer()
	return sp, shm, pm, func() error { err := <-done; sp.Close(); return err }
}

// BenchmarkShipperDrain drains a spool of b.N 512-record batches into the
// test RabbitMQ (persistent, confirmed, quorum queue): records/s, the rate
// at which a backlog empties when no live traffic competes.
func BenchmarkShipperDrain(b *testing.B) {
	in := make(chan Batch)
	close(in)
	sp, _, pm, wait := benchShipper(b, b.N, in)
	before := counterValue(pm.Confirmed) // confirmed before the clock started
	if err := wait(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if st := sp.Stats(); st.Records != 0 {
		b.Fatalf("%d records left in the spool", st.Records)
	}
	b.ReportMetric((float64(b.N*512)-before)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkShipperLive sends b.N 512-record batches through an empty spool
// as fast as the broker confirms them: records/s live, and the share that
// had to wait in the spool because the broker was slower than the input.
func BenchmarkShipperLive(b *testing.B) {
	in := make(chan Batch, 1)
	_, shm, pm, wait := benchShipper(b, 0, in)
	bt := benchBatch()
	for range b.N {
		in <- bt
	}
	close(in)
	if err := wait(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	live := counterValue(shm.Live)
	b.ReportMetric(counterValue(pm.Confirmed)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(100*live/float64(b.N*512), "%live")
}
