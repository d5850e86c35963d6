package spool

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the spool. Records are counted, not batches, except Corrupt.
type Metrics struct {
	Bytes    prometheus.Gauge   // segment files on disk
	Batches  prometheus.Gauge   // batches not yet confirmed
	Records  prometheus.Gauge   // records in them
	MaxBytes prometheus.Gauge   // SPOOL_MAX_BYTES
	Written  prometheus.Counter // records appended
	Drained  prometheus.Counter // records read back and confirmed by the broker
	Corrupt  prometheus.Counter // torn or damaged batches skipped
	Dropped  *prometheus.CounterVec
	oldest   atomic.Int64 // ingest of the oldest unconfirmed batch, Unix ns; 0: none
}

// NewMetrics registers the spool's metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_spool_bytes",
			Help: "Bytes of spool segment files on disk."}),
		Batches: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_spool_batches",
			Help: "Batches in the spool not yet confirmed by the broker."}),
		Records: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_spool_records",
			Help: "Records in the spool not yet confirmed by the broker."}),
		MaxBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_spool_max_bytes",
			Help: "The spool's bound (SPOOL_MAX_BYTES)."}),
		Written: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_spool_written_records_total",
			Help: "Records written to the spool."}),
		Drained: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_spool_drained_records_total",
			Help: "Records read back from the spool and confirmed by the broker."}),
		Corrupt: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_spool_corrupt_batches_total",
			Help: "Torn or damaged spool batches found (by checksum) and skipped."}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_spool_dropped_total",
			Help: "Records the spool dropped, by reason: full (SPOOL_MAX_BYTES reached), write_error, corrupt."},
			[]string{"reason"}),
	}
	for _, r := range []string{ReasonFull, ReasonWriteError, ReasonCorrupt} {
		m.Dropped.WithLabelValues(r)
	}
	if reg != nil {
		age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "connpipe_capture_spool_oldest_age_seconds",
			Help: "Age of the oldest batch in the spool not yet confirmed (since it was batched); 0 when empty."},
			func() float64 {
				o := m.oldest.Load()
				if o == 0 {
					return 0
				}
				return max(0, time.Since(time.Unix(0, o)).Seconds())
			})
		reg.MustRegister(m.Bytes, m.Batches, m.Records, m.MaxBytes, m.Written, m.Drained, m.Corrupt, m.Dropped, age)
	}
	return m
}

func (m *Metrics) dropped(reason string) prometheus.Counter { return m.Dropped.WithLabelValues(reason) }
