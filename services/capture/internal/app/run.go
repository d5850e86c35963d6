package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/discard"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/publish"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/services/capture/internal/textout"
	"github.com/connpipe/connpipe/shared/ops"
	"github.com/prometheus/client_golang/prometheus"
)

// runner is one run of capture: what Run's steps build and hand on.
type runner struct {
	ctx    context.Context
	cfg    Config
	log    *slog.Logger
	flt    *filter.Filter
	listen netip.AddrPort
	tun    decode.Tunnels
	reg    *prometheus.Registry
	m      *metrics
	info   Info

	// Publishing outlives ctx by up to SHUTDOWN_TIMEOUT, to drain.
	pubCtx    context.Context
	cancelPub context.CancelCauseFunc

	// /healthz answers 200 only once capture is reading (and, with
	// OUTPUT=amqp, connected): opening the rings takes a moment, and
	// traffic sent before then would not be recorded.
	capturing atomic.Bool
	out       output
	health    func() error
	closeOut  func() error

	src   source.Source // files, or nil for live rings
	files *source.Files
	lives []*source.Live

	stopPolling func()
	// undos are what each step left to stop, in order; undo runs them
	// last first.
	undos []func()
}

var errNotCapturing = errors.New("not capturing yet")

// newRunner takes cfg's parsed values, builds the metrics, and starts the
// publishing context, which ctx's end cancels SHUTDOWN_TIMEOUT later.
func newRunner(ctx context.Context, cfg Config, log *slog.Logger) *runner {
	r := &runner{ctx: ctx, cfg: cfg, log: log, reg: ops.NewRegistry(), stopPolling: func() {}}
	r.flt, _ = cfg.filter() // Validate has checked these three
	r.listen, _ = cfg.listen()
	r.tun, _ = cfg.tunnels()
	r.m = newMetrics(r.reg)
	r.info = Info{Filter: r.flt.String(), Registry: r.reg}
	r.pubCtx, r.cancelPub = context.WithCancelCause(context.WithoutCancel(ctx))
	r.onUndo(func() { r.cancelPub(nil) })
	stopDrainTimer := context.AfterFunc(ctx, func() {
		time.AfterFunc(cfg.ShutdownTimeout, func() {
			r.cancelPub(fmt.Errorf("shutdown timeout %s", cfg.ShutdownTimeout))
		})
	})
	r.onUndo(func() { stopDrainTimer() })
	return r
}

func (r *runner) onUndo(f func()) { r.undos = append(r.undos, f) }

func (r *runner) undo() {
	for i := len(r.undos) - 1; i >= 0; i-- {
		r.undos[i]()
	}
}

// openOutput opens OUTPUT: text on stdout, or the batcher and the
// publisher (through the spool when SPOOL_DIR is set).
func (r *runner) openOutput() error {
	if r.cfg.Output == OutputStdout {
		w := r.cfg.Stdout
		if w == nil {
			w = os.Stdout
		}
		text := textout.New(w)
		r.out = text
		r.closeOut = func() error { return text.Close(r.pubCtx) }
		r.health = func() error {
			if !r.capturing.Load() {
				return errNotCapturing
			}
			return nil
		}
		return nil
	}
	return r.openAMQP()
}

// openAMQP is openOutput for OUTPUT=amqp.
func (r *runner) openAMQP() error {
	cfg, log := r.cfg, r.log
	batcher := publish.NewBatcher(r.pubCtx, cfg.BatchSize, cfg.BatchInterval)
	host, _ := os.Hostname()
	pub := publish.NewPublisher(publish.PublisherConfig{
		URL: cfg.AMQPURL, Name: "connpipe-capture@" + host, MaxInFlight: cfg.MaxInFlight,
		Logger: log, Metrics: publish.NewMetrics(r.reg),
	})
	sp, err := openSpool(cfg, r.reg, log)
	if err != nil {
		return err
	}
	pubDone := make(chan error, 1)
	if sp == nil {
		go func() { pubDone <- pub.Run(r.pubCtx, batcher.Out()) }()
	} else {
		ship := publish.NewShipper(publish.ShipperConfig{Spool: sp, Publisher: pub, Logger: log,
			Metrics: publish.NewShipperMetrics(r.reg, sp.Metrics().Drained)})
		go func() {
			err := ship.Run(r.pubCtx, batcher.Out())
			pubDone <- errors.Join(err, sp.Close())
		}()
	}
	r.out = batcher
	r.health = func() error {
		if !r.capturing.Load() {
			return errNotCapturing
		}
		return brokerHealth(pub, sp)
	}
	r.closeOut = func() error {
		var held error
		if err := batcher.Close(r.pubCtx); err != nil {
			held = fmt.Errorf("%d records never handed to the publisher: %w", batcher.Held(), err)
			r.cancelPub(err)
		}
		stop := context.AfterFunc(r.ctx, func() { stopEarly(sp, pub, r.cancelPub) })
		defer stop()
		return errors.Join(<-pubDone, held)
	}
	return nil
}

// serveMetrics serves /metrics and /healthz on METRICS_ADDR. The server
// stops last, so a scrape sees the final counters.
func (r *runner) serveMetrics() error {
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(r.ctx))
	r.onUndo(stopSrv)
	if r.cfg.MetricsAddr == "" {
		return nil
	}
	srv, err := ops.Listen(r.cfg.MetricsAddr, r.cfg.MetricsToken, r.reg, r.health)
	if err != nil {
		return fmt.Errorf("METRICS_ADDR=%q: %w", r.cfg.MetricsAddr, err)
	}
	r.info.MetricsAddr = srv.Addr()
	r.log.Info("serving metrics", "addr", srv.Addr())
	go func() {
		if err := srv.Serve(srvCtx); err != nil {
			r.log.Error("metrics server", "err", err)
		}
	}()
	return nil
}

// openSource opens the capture files, or the live rings on INTERFACE.
func (r *runner) openSource() error {
	cfg, log := r.cfg, r.log
	if len(cfg.PcapFiles) > 0 {
		r.files = source.NewFiles(cfg.PcapFiles, cfg.ReplaySpeed)
		r.files.OnOpen = func(f *source.File) {
			log.Info("reading capture file", "file", f.Path(), "filter", r.info.Filter, "speed", cfg.ReplaySpeed)
		}
		r.src = r.files
		r.onUndo(func() { r.src.Close() })
		return nil
	}
	lc := source.LiveConfig{
		Interface: cfg.Interface, Filter: r.flt, Snaplen: cfg.Snaplen, Workers: cfg.workers(),
		BlockSize: cfg.RingBlockSize, Blocks: cfg.RingBlocks, BlockTimeout: cfg.RingTimeout,
	}
	var err error
	if r.tun.Any() {
		if lc.Tunnels, err = kernelTunnels(cfg.Interface, r.tun); err == nil {
			log.Info("mirror mode", "tunnels", cfg.Decap, "kernel_filter", lc.Tunnels.String(), "inner_filter", r.info.Filter)
		}
	}
	if err == nil {
		r.lives, err = source.OpenLive(lc)
	}
	if err != nil {
		return fmt.Errorf("INTERFACE=%q: %w", cfg.Interface, err)
	}
	r.onUndo(func() {
		for _, l := range r.lives {
			l.Close()
		}
	})
	for _, l := range r.lives {
		w := strconv.Itoa(l.Worker())
		r.m.kernelDrops.WithLabelValues(w)
		r.m.ringFreezes.WithLabelValues(w)
	}
	log.Info("capturing", "interface", cfg.Interface, "link", r.lives[0].LinkType(), "filter", r.info.Filter,
		"snaplen", cfg.Snaplen, "workers", len(r.lives), "ring_block_size", cfg.RingBlockSize,
		"ring_blocks", cfg.RingBlocks, "ring_timeout", cfg.RingTimeout,
		"ring_bytes", int64(len(r.lives))*int64(cfg.RingBlocks)*int64(cfg.RingBlockSize))
	return nil
}

// startSink accepts and discards connections on LISTEN_ADDR when SINK is
// set, until Run returns.
func (r *runner) startSink() error {
	if !r.cfg.Sink {
		return nil
	}
	s, err := discard.Listen(r.listen.String(), r.log)
	if err != nil {
		return fmt.Errorf("SINK on LISTEN_ADDR=%q: %w", r.cfg.ListenAddr, err)
	}
	r.info.SinkAddr = s.Addr().String()
	r.log.Info("sink listening", "addr", r.info.SinkAddr)
	sinkCtx, stopSink := context.WithCancel(r.ctx)
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); _ = s.Serve(sinkCtx) }()
	r.onUndo(func() { stopSink(); <-sinkDone })
	return nil
}

// pollRings adds the kernel's ring counters to the metrics every second
// while live rings are open; stopPolling reads them a last time.
func (r *runner) pollRings() {
	if r.lives == nil {
		return
	}
	pollCtx, stopPoll := context.WithCancel(context.WithoutCancel(r.ctx))
	polled := make(chan struct{})
	go func() { defer close(polled); pollRingStats(pollCtx, r.lives, r.m, r.log) }()
	r.stopPolling = sync.OnceFunc(func() { stopPoll(); <-polled })
	r.onUndo(r.stopPolling)
}

// capture reads until ctx ends or the source does, then stops the key
// scanner and the polling and closes the output. A read error wins over
// one from closing, which is logged.
func (r *runner) capture() error {
	scan, stopScan := startKeyScan(r.ctx, r.pubCtx, r.cfg, r.out, r.reg, r.log)
	var readErr error
	if r.lives != nil {
		readErr = readRings(r.ctx, r.lives, r.tun, r.flt, r.out, scan, r.m, r.log)
	} else {
		p := newFrames(r.tun, r.flt, r.out, scan, 0, r.log)
		readErr = read(r.ctx, r.src, r.files, &p, r.m, r.log)
	}
	scanErr := stopScan()
	r.stopPolling() // the last read of the kernel's counters
	closeErr := errors.Join(scanErr, r.closeOut())
	switch {
	case readErr != nil:
		if closeErr != nil {
			r.log.Error("flush at shutdown", "err", closeErr)
		}
		return readErr
	case closeErr != nil:
		return closeErr
	}
	return nil
}
