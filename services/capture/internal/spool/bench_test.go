package spool

import (
	"net/netip"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// benchBatch is a batch of 512 IPv4 records, as the batcher makes them by
// default (BATCH_SIZE=512).
func benchBatch() Entry {
	var enc record.Encoder
	enc.Reset(time.Now().UnixNano())
	r := record.Record{Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("10.9.8.7"), SrcPort: 40000, DstPort: 7000, Flags: 0x18, IPLen: 60}
	for i := range 512 {
		r.TS = int64(i)
		r.SrcPort = uint16(40000 + i)
		enc.Add(&r)
	}
	return Entry{Body: append([]byte(nil), enc.Bytes()...), Records: 512, Ingest: time.Now().UnixNano()}
}

// Outage arithmetic for the aim: a 10-minute outage at 50,000
// records/s, drained in under 5 minutes while traffic goes on.
const (
	aimRate   = 50_000
	aimOutage = 10 * 60
	aimDrain  = 5 * 60
)

func reportOutage(b *testing.B, e Entry) {
	records := float64(aimRate * aimOutage)
	bytes := records / float64(e.Records) * float64(entryHeader+len(e.Body))
	b.ReportMetric(bytes/(1<<20), "MiB/10min@50k")
}

// BenchmarkSpoolWrite appends 512-record batches: records/s into the
// spool, per fsync policy.
func BenchmarkSpoolWrite(b *testing.B) {
	for _, p := range []FsyncPolicy{FsyncNever, FsyncInterval, FsyncBatch} {
		b.Run(string(p), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), MaxBytes: 64 << 30, Fsync: p})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := benchBatch()
			b.SetBytes(int64(len(e.Body)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := s.Append(e); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*e.Records)/b.Elapsed().Seconds(), "records/s")
			if p == FsyncNever {
				reportOutage(b, e)
			}
		})
	}
}

// BenchmarkSpoolDrain reads back and acks 512-record batches: records/s
// out of the spool (disk side only; the broker's side is
// publish.BenchmarkShipperDrain).
func BenchmarkSpoolDrain(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBytes: 64 << 30, Fsync: FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := benchBatch()
	for range b.N {
		if err := s.Append(e); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(e.Body)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		got, ok, err := s.Next()
		if err != nil || !ok {
			b.Fatalf("next: %v %v", ok, err)
		}
		s.Ack(got)
	}
	b.StopTimer()
	rate := float64(b.N*e.Records) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "records/s")
	// Seconds to drain a 10-minute outage at 50k/s while 50k/s still arrive.
	if rate > aimRate {
		b.ReportMetric(float64(aimRate*aimOutage)/(rate-aimRate), "s-drain-10min@50k")
	}
	if st := s.Stats(); st.Batches != 0 || st.Bytes != 0 {
		b.Fatalf("spool not empty after draining: %+v", st)
	}
}
