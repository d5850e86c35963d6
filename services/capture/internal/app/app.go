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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/discard"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/keyscan"
	"github.com/connpipe/connpipe/services/capture/internal/publish"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/services/capture/internal/textout"
	"github.com/connpipe/connpipe/shared/ops"
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
	flt, _ := cfg.filter()
	listen, _ := cfg.listen()
	tun, _ := cfg.tunnels()
	reg := ops.NewRegistry()
	m := newMetrics(reg)
	info := Info{Filter: flt.String(), Registry: reg}

	// Publishing outlives ctx by up to SHUTDOWN_TIMEOUT, to drain.
	pubCtx, cancelPub := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelPub(nil)
	stopDrainTimer := context.AfterFunc(ctx, func() {
		time.AfterFunc(cfg.ShutdownTimeout, func() {
			cancelPub(fmt.Errorf("shutdown timeout %s", cfg.ShutdownTimeout))
		})
	})
	defer stopDrainTimer()

	// /healthz answers 200 only once capture is reading (and, with
	// OUTPUT=amqp, connected): opening the rings takes a moment, and
	// traffic sent before then would not be recorded.
	var capturing atomic.Bool
	notYet := errors.New("not capturing yet")
	var (
		out     output
		health  = func() error { return nil }
		closeFn func() error
	)
	switch cfg.Output {
	case OutputStdout:
		w := cfg.Stdout
		if w == nil {
			w = os.Stdout
		}
		text := textout.New(w)
		out = text
		closeFn = func() error { return text.Close(pubCtx) }
	case OutputAMQP:
		batcher := publish.NewBatcher(pubCtx, cfg.BatchSize, cfg.BatchInterval)
		host, _ := os.Hostname()
		pub := publish.NewPublisher(publish.PublisherConfig{
			URL: cfg.AMQPURL, Name: "connpipe-capture@" + host, MaxInFlight: cfg.MaxInFlight,
			Logger: log, Metrics: publish.NewMetrics(reg),
		})
		sp, err := openSpool(cfg, reg, log)
		if err != nil {
			return err
		}
		pubDone := make(chan error, 1)
		if sp == nil {
			go func() { pubDone <- pub.Run(pubCtx, batcher.Out()) }()
		} else {
			ship := publish.NewShipper(publish.ShipperConfig{Spool: sp, Publisher: pub, Logger: log,
				Metrics: publish.NewShipperMetrics(reg, sp.Metrics().Drained)})
			go func() {
				err := ship.Run(pubCtx, batcher.Out())
				pubDone <- errors.Join(err, sp.Close())
			}()
		}
		out = batcher
		health = func() error {
			if !capturing.Load() {
				return notYet
			}
			return brokerHealth(pub, sp)
		}
		closeFn = func() error {
			var held error
			if err := batcher.Close(pubCtx); err != nil {
				held = fmt.Errorf("%d records never handed to the publisher: %w", batcher.Held(), err)
				cancelPub(err)
			}
			stop := context.AfterFunc(ctx, func() { stopEarly(sp, pub, cancelPub) })
			defer stop()
			return errors.Join(<-pubDone, held)
		}
	}

	if cfg.Output == OutputStdout {
		health = func() error {
			if !capturing.Load() {
				return notYet
			}
			return nil
		}
	}

	// The metrics server stops last, so a scrape sees the final counters.
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	if cfg.MetricsAddr != "" {
		srv, err := ops.Listen(cfg.MetricsAddr, cfg.MetricsToken, reg, health)
		if err != nil {
			_ = closeFn()
			return fmt.Errorf("METRICS_ADDR=%q: %w", cfg.MetricsAddr, err)
		}
		info.MetricsAddr = srv.Addr()
		log.Info("serving metrics", "addr", srv.Addr())
		go func() {
			if err := srv.Serve(srvCtx); err != nil {
				log.Error("metrics server", "err", err)
			}
		}()
	}

	var (
		src    source.Source
		lives  []*source.Live
		files  *source.Files
		srcErr error
	)
	if len(cfg.PcapFiles) > 0 {
		files = source.NewFiles(cfg.PcapFiles, cfg.ReplaySpeed)
		files.OnOpen = func(f *source.File) {
			log.Info("reading capture file", "file", f.Path(), "filter", info.Filter, "speed", cfg.ReplaySpeed)
		}
		src = files
	} else {
		lc := source.LiveConfig{
			Interface: cfg.Interface, Filter: flt, Snaplen: cfg.Snaplen, Workers: cfg.workers(),
			BlockSize: cfg.RingBlockSize, Blocks: cfg.RingBlocks, BlockTimeout: cfg.RingTimeout,
		}
		if tun.Any() {
			if lc.Tunnels, srcErr = kernelTunnels(cfg.Interface, tun); srcErr == nil {
				log.Info("mirror mode", "tunnels", cfg.Decap, "kernel_filter", lc.Tunnels.String(), "inner_filter", info.Filter)
			}
		}
		if srcErr == nil {
			lives, srcErr = source.OpenLive(lc)
		}
		if srcErr != nil {
			_ = closeFn()
			return fmt.Errorf("INTERFACE=%q: %w", cfg.Interface, srcErr)
		}
		defer func() {
			for _, l := range lives {
				l.Close()
			}
		}()
		for _, l := range lives {
			w := strconv.Itoa(l.Worker())
			m.kernelDrops.WithLabelValues(w)
			m.ringFreezes.WithLabelValues(w)
		}
		log.Info("capturing", "interface", cfg.Interface, "link", lives[0].LinkType(), "filter", info.Filter,
			"snaplen", cfg.Snaplen, "workers", len(lives), "ring_block_size", cfg.RingBlockSize,
			"ring_blocks", cfg.RingBlocks, "ring_timeout", cfg.RingTimeout,
			"ring_bytes", int64(len(lives))*int64(cfg.RingBlocks)*int64(cfg.RingBlockSize))
	}
	if src != nil {
		defer src.Close()
	}

	sinkDone := make(chan struct{})
	sinkCtx, stopSink := context.WithCancel(ctx)
	defer func() { stopSink(); <-sinkDone }()
	if cfg.Sink {
		s, err := discard.Listen(listen.String(), log)
		if err != nil {
			close(sinkDone)
			_ = closeFn()
			return fmt.Errorf("SINK on LISTEN_ADDR=%q: %w", cfg.ListenAddr, err)
		}
		info.SinkAddr = s.Addr().String()
		log.Info("sink listening", "addr", info.SinkAddr)
		go func() { defer close(sinkDone); _ = s.Serve(sinkCtx) }()
	} else {
		close(sinkDone)
	}

	stopPolling := func() {}
	if lives != nil {
		pollCtx, stopPoll := context.WithCancel(context.WithoutCancel(ctx))
		polled := make(chan struct{})
		go func() { defer close(polled); pollRingStats(pollCtx, lives, m, log) }()
		stopPolling = sync.OnceFunc(func() { stopPoll(); <-polled })
		defer stopPolling()
	}
	capturing.Store(true)
	if cfg.Ready != nil {
		cfg.Ready(info)
	}

	scan, stopScan := startKeyScan(ctx, pubCtx, cfg, out, reg, log)
	var readErr error
	if lives != nil {
		readErr = readRings(ctx, lives, tun, flt, out, scan, m, log)
	} else {
		readErr = read(ctx, src, files, tun, flt, out, scan, m, log)
	}
	scanErr := stopScan()
	stopPolling() // the last read of the kernel's counters
	closeErr := errors.Join(scanErr, closeFn())
	switch {
	case readErr != nil:
		if closeErr != nil {
			log.Error("flush at shutdown", "err", closeErr)
		}
		return readErr
	case closeErr != nil:
		return closeErr
	}
	return nil
}

// read moves frames from src to out until ctx ends or the source does.
func read(ctx context.Context, src source.Source, files *source.Files, tun decode.Tunnels, flt *filter.Filter,
	out output, scan *keyscan.Scanner, m *metrics, log *slog.Logger) error {
	var (
		rec             record.Record
		packets, recs   int
		lastLog         = time.Now()
		lastPackets     int
		debug           = log.Enabled(ctx, slog.LevelDebug)
		filtered, added int
		malformed       [decode.NumStatus]int
		seg             []byte
		st              decode.Status
		via             decode.Tunnel
		dec             = decode.NewDecoder(tun)
	)
	// summary logs where every frame read went: packets = published +
	// filtered + malformed, the malformed ones by reason.
	summary := func(msg string, err error) {
		attrs := []any{"packets", packets, "records", recs, "published", added, "filtered", filtered}
		var reasons []any
		total := 0
		for s, n := range malformed {
			if n > 0 {
				reasons = append(reasons, decode.Status(s).String(), n)
				total += n
			}
		}
		attrs = append(attrs, "malformed", total)
		if total > 0 {
			attrs = append(attrs, slog.Group("malformed_by_reason", reasons...))
		}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		log.Info(msg, attrs...)
	}
	for {
		p, err := src.Next(ctx)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				summary("capture files read", nil)
				return nil
			case ctx.Err() != nil:
				return nil
			}
			if files != nil {
				summary("capture files read up to an error", err)
			}
			return err // a truncated file (source.ErrTruncated) ends the run here
		}
		packets++
		m.packets.Inc()
		st, seg, via = dec.Decode(p.Link, p.Data, p.Len, &rec)
		matched := st == decode.StatusOK && flt.Match(&rec)
		if via != decode.TunnelNone {
			m.tunnels[via][tunOutcome(st, matched)].Inc()
		}
		if st != decode.StatusOK {
			if st.Malformed() {
				malformed[st]++
				m.decodeErrors[st].Inc()
				if debug {
					log.Debug("malformed frame skipped", "reason", st.String(), "link", p.Link, "len", len(p.Data), "ts", p.TS)
				}
			} else {
				filtered++
				m.filtered.Inc()
			}
			continue
		}
		recs++
		m.records.Inc()
		if !matched {
			filtered++
			m.filtered.Inc()
			continue
		}
		rec.TS = p.TS
		if scan == nil {
			err = out.Add(ctx, &rec)
		} else {
			err = scan.Packet(ctx, &rec, seg)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EPIPE) {
				return nil // stdout closed by the reader (capture -r f | head)
			}
			return fmt.Errorf("output: %w", err)
		}
		added++
		if files != nil && packets&0x3ff == 0 {
			if now := time.Now(); now.Sub(lastLog) >= progressEvery {
				rate := float64(packets-lastPackets) / now.Sub(lastLog).Seconds()
				file := ""
				if f := files.Current(); f != nil {
					file = f.Path()
				}
				log.Info("replay progress", "file", file, "packets", packets, "records", recs, "published", added, "packets_per_s", int(rate))
				lastLog, lastPackets = now, packets
			}
		}
	}
}
