// Package app wires capture together: a source (CAPTURE_WORKERS live
// readers of AF_PACKET rings in one fan-out group, or capture files), the
// decoder, the filter, and one output shared by the readers (RabbitMQ
// through the batcher and publisher, or text on stdout), with the metrics
// server and the optional TCP sink.
//
// Every frame the source delivers is counted in packets_total and ends in
// exactly one of: decode_errors_total{reason} (malformed), filtered_total
// (not a TCP packet, or one the filter does not match), or a record handed
// to the output. records_total counts the TCP packets decoded, before the
// filter. In mirror mode (DECAP) a tunnel frame counts once more, in
// tunnel_frames_total{tunnel,outcome}.
package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the reading side.
type metrics struct {
	packets      prometheus.Counter
	records      prometheus.Counter
	filtered     prometheus.Counter
	kernelDrops  *prometheus.CounterVec // by worker
	ringFreezes  *prometheus.CounterVec // by worker
	decodeErrors [decode.NumStatus]prometheus.Counter
	ringErrors   [source.NumFaults]prometheus.Counter
	tunnels      *tunnelCounters
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		packets: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_packets_total",
			Help: "Frames delivered by the source (socket or file)."}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_records_total",
			Help: "TCP packets decoded into records, before the filter."}),
		filtered: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_filtered_total",
			Help: "Frames that did not match the filter (not TCP, or TCP to another address)."}),
		kernelDrops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_kernel_drops_total",
			Help: "Frames the kernel dropped because the reader's ring was full (tp_drops), by reader."}, []string{"worker"}),
		ringFreezes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_ring_freezes_total",
			Help: "Times a reader's ring filled up and the kernel froze it (tp_freeze_q_cnt), by reader."}, []string{"worker"}),
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_decode_errors_total",
		Help: "Malformed frames, skipped, by reason."}, []string{"reason"})
	for _, s := range decode.MalformedStatuses() {
		m.decodeErrors[s] = errs.WithLabelValues(s.String())
	}
	ringErrs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_ring_errors_total",
		Help: "Ring blocks whose kernel-written header or frame cursors were inconsistent, by reason; the rest of such a block is skipped."}, []string{"reason"})
	for _, f := range source.Faults() {
		m.ringErrors[f] = ringErrs.WithLabelValues(f.String())
	}
	reg.MustRegister(m.packets, m.records, m.filtered, m.kernelDrops, m.ringFreezes, errs, ringErrs)
	m.tunnels = newTunnelCounters(reg)
	return m
}

// output receives the records that pass the filter.
type output interface {
	Add(ctx context.Context, r *record.Record) error
	// AddAll adds recs in order, as Add does each, at one lock's cost.
	AddAll(ctx context.Context, recs []record.Record) error
}

// progressEvery is how often a long file replay logs its progress.
const progressEvery = 5 * time.Second

// Run captures until ctx ends (live) or the files are read (offline), then
// flushes the open batch and waits, at most SHUTDOWN_TIMEOUT after ctx
// ends, for the broker to confirm what was published. A capture file cut
// mid-record ends the run with a *source.TruncatedError once the whole
// packets before it are out.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	r := newRunner(ctx, cfg, log)
	defer r.undo()
	if err := r.openOutput(); err != nil {
		return err
	}
	// Once the output is open, a step that fails closes it.
	for _, step := range []func() error{r.serveMetrics, r.openSource, r.startSink} {
		if err := step(); err != nil {
			_ = r.closeOut()
			return err
		}
	}
	r.pollRings()
	r.capturing.Store(true)
	if cfg.Ready != nil {
		cfg.Ready(r.info)
	}
	return r.capture()
}
