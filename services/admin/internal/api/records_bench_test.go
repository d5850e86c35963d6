package api

import (
	"io"
	"net/http"
	"net/netip"
	"testing"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/shared/record"
)

// discardWriter is a ResponseWriter that throws the answer away.
type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

var _ io.Writer = (*discardWriter)(nil)

func benchItems(n int) []readback.Item {
	items := make([]readback.Item, n)
	for i := range items {
		items[i] = readback.Item{Backend: "redis-a", Record: record.Record{TS: 1700000000123456789 + int64(i),
			Src: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("10.9.9.9"),
			SrcPort: uint16(i), DstPort: 80, Flags: record.FlagSYN, IPLen: 60}}
	}
	return items
}

// BenchmarkRecordsAnswer compares writing a records answer of the
// largest size (readback.MaxLimit records) record by record (stream) with
// building it whole and encoding it at once (whole, as before).
func BenchmarkRecordsAnswer(b *testing.B) {
	items := benchItems(readback.MaxLimit)
	out := apitypes.RecordsResponse{CountByBackend: map[string]int{"redis-a": len(items)}}
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		var w *discardWriter
		for b.Loop() {
			w = &discardWriter{h: http.Header{}}
			writeRecords(w, http.StatusOK, out, items)
		}
		b.ReportMetric(float64(w.n)/1e6, "answer-MB")
	})
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o := out
			o.Records = make([]apitypes.RecordItem, len(items))
			for i := range items {
				o.Records[i] = apitypes.RecordItem{Backend: items[i].Backend, JSON: record.ToJSON(&items[i].Record)}
			}
			w := &discardWriter{h: http.Header{}}
			writeJSON(w, http.StatusOK, o)
			if w.n == 0 {
				b.Fatal("nothing written")
			}
		}
	})
}
