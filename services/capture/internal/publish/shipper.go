package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ShipperMetrics are the rates of the two ways to the broker.
type ShipperMetrics struct {
	Live      prometheus.Counter // records confirmed that went straight to the broker
	LiveRate  prometheus.Gauge   // records/s confirmed live, over the last rateWindow
	DrainRate prometheus.Gauge   // records/s confirmed from the spool, over the last rateWindow
	drained   prometheus.Counter // the spool's drained counter
}

// NewShipperMetrics registers the shipper's metrics on reg; drained is the
// spool's counter of records drained.
func NewShipperMetrics(reg prometheus.Registerer, drained prometheus.Counter) *ShipperMetrics {
	m := &ShipperMetrics{
		Live: prometheus.NewCounter(prometheus.CounterOpts{Name: "connpipe_capture_records_live_total",
			Help: "Records confirmed by the broker that went to it straight from the batcher, not through the spool."}),
		LiveRate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_live_records_per_second",
			Help: "Records/s confirmed live (not through the spool), over the last 5 s."}),
		DrainRate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "connpipe_capture_spool_drain_records_per_second",
			Help: "Records/s drained from the spool (read back and confirmed), over the last 5 s."}),
		drained: drained,
	}
	reg.MustRegister(m.Live, m.LiveRate, m.DrainRate)
	return m
}

// rateWindow is the span of the rate gauges.
const rateWindow = 5 * time.Second

// DefaultLiveWait is how long a batch waits for the publisher's window
// before it goes to the spool, when the spool is empty.
const DefaultLiveWait = 10 * time.Millisecond

// ShipperConfig configures a Shipper.
type ShipperConfig struct {
	Spool     *spool.Spool
	Publisher *Publisher
	LiveWait  time.Duration // 0: DefaultLiveWait
	Logger    *slog.Logger
	Metrics   *ShipperMetrics
}

// Shipper stands between the batcher and the publisher so that the reader
// never waits for the broker. While the spool is empty, a batch goes
// straight to the publisher if its window takes it within LiveWait;
// otherwise (broker unreachable, blocked, or slower than the traffic) it is
// appended to the spool, and from then on every new batch queues in the
// spool behind it, until the publisher has drained the spool, oldest
// first. A spooled batch is acked in the spool only once the broker
// confirms it. When the connection is lost, the publisher's unconfirmed
// live batches are moved into the spool too, and when Run stops early
// (ctx), whatever the publisher still holds is written there: the next
// run sends it.
type Shipper struct {
	cfg  ShipperConfig
	sp   *spool.Spool
	pub  *Publisher
	log  *slog.Logger
	m    *ShipperMetrics
	wake chan struct{}

	mu      sync.Mutex
	closing bool // the publisher's input is closed: spill no more
}

// NewShipper returns a shipper; Run does the work.
func NewShipper(cfg ShipperConfig) *Shipper {
	if cfg.LiveWait <= 0 {
		cfg.LiveWait = DefaultLiveWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewShipperMetrics(prometheus.NewRegistry(), prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
	}
	return &Shipper{cfg: cfg, sp: cfg.Spool, pub: cfg.Publisher, log: cfg.Logger, m: cfg.Metrics, wake: make(chan struct{}, 1)}
}

// Run ships the batches of in until in is closed, the spool is drained and
// every batch is confirmed; or until ctx ends, leaving what is
// unconfirmed in the spool. It runs the publisher.
func (s *Shipper) Run(ctx context.Context, in <-chan Batch) error {
	pubIn := make(chan Batch)
	s.pub.confirmed = s.confirmed
	s.pub.spill = s.spill
	pubDone := make(chan error, 1)
	go func() { pubDone <- s.pub.Run(ctx, pubIn) }()
	rateCtx, stopRates := context.WithCancel(ctx)
	ratesDone := make(chan struct{})
	go func() { defer close(ratesDone); s.rates(rateCtx) }()
	defer func() { stopRates(); <-ratesDone }()

	pumpErr := s.pump(ctx, in, pubIn)
	pubErr := <-pubDone

	// Keep what the publisher gave up on: live batches, and spooled ones
	// whose segment a full spool dropped meanwhile.
	kept, lost := 0, 0
	for _, b := range s.pub.leftover {
		if b.spooled && s.sp.Has(b.entry.ID) {
			continue
		}
		if err := s.sp.Append(spool.Entry{Body: b.Body, Records: b.Records, Ingest: b.Ingest}); err != nil {
			lost += b.Records
			continue
		}
		kept += b.Records
	}
	for b := range drainChan(in) {
		if err := s.sp.Append(spool.Entry{Body: b.Body, Records: b.Records, Ingest: b.Ingest}); err != nil {
			lost += b.Records
			continue
		}
		kept += b.Records
	}
	s.pub.leftover = nil
	s.sp.Sync()
	if st := s.sp.Stats(); st.Records > 0 {
		s.log.Warn("stopping with records in the spool; they are sent when capture starts again",
			"dir", s.sp.Dir(), "records", st.Records, "batches", st.Batches, "bytes", st.Bytes)
	}
	if kept > 0 {
		s.log.Info("unconfirmed batches kept in the spool", "records", kept)
	}
	if lost > 0 {
		return fmt.Errorf("%d records could not be kept in the spool (counted as dropped): %w", lost, errors.Join(pumpErr, pubErr))
	}
	return pumpErr
}

// drainChan yields the batches waiting in in without blocking.
func drainChan(in <-chan Batch) func(func(Batch) bool) {
	return func(yield func(Batch) bool) {
		for {
			select {
			case b, ok := <-in:
				if !ok || !yield(b) {
					return
				}
			default:
				return
			}
		}
	}
}

// pump moves batches from in to the publisher or the spool, and from the
// spool to the publisher. It closes pubIn when in is closed and the spool
// has been read to the end.
func (s *Shipper) pump(ctx context.Context, in <-chan Batch, pubIn chan<- Batch) error {
	var (
		next    *Batch // read from the spool, not yet taken by the publisher
		liveT   = time.NewTimer(time.Hour)
		readErr time.Time
		retry   <-chan time.Time // set after a read error
	)
	liveT.Stop()
	for {
		if next == nil && retry == nil {
			e, ok, err := s.sp.Next()
			switch {
			case err != nil:
				if errors.Is(err, spool.ErrClosed) {
					return err
				}
				if time.Since(readErr) > spool.DropLogEvery {
					s.log.Error("read spool", "err", err)
					readErr = time.Now()
				}
				retry = time.After(100 * time.Millisecond) // do not spin on a failing disk
			case ok:
				next = &Batch{Body: e.Body, Records: e.Records, Ingest: e.Ingest, spooled: true, entry: e}
			}
		}
		if in == nil && next == nil && retry == nil {
			s.mu.Lock()
			if !s.sp.Unread() {
				s.closing = true
			}
			closing := s.closing
			s.mu.Unlock()
			if closing {
				close(pubIn)
				return nil
			}
			continue
		}
		var out chan<- Batch
		var nb Batch
		if next != nil {
			out, nb = pubIn, *next
		}
		select {
		case b, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			if next == nil && !s.sp.Unread() && s.handLive(ctx, pubIn, b, liveT) {
				continue
			}
			_ = s.sp.Append(spool.Entry{Body: b.Body, Records: b.Records, Ingest: b.Ingest})
		case out <- nb:
			next = nil
		case <-s.wake:
		case <-retry:
			retry = nil
		case <-ctx.Done():
			return nil
		}
	}
}

// handLive gives b to the publisher if it takes it within LiveWait.
func (s *Shipper) handLive(ctx context.Context, pubIn chan<- Batch, b Batch, t *time.Timer) bool {
	select {
	case pubIn <- b:
		return true
	default:
	}
	t.Reset(s.cfg.LiveWait)
	defer t.Stop()
	select {
	case pubIn <- b:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// confirmed is called by the publisher for each confirmed batch.
func (s *Shipper) confirmed(b Batch) {
	if b.spooled {
		s.sp.Ack(b.entry)
		return
	}
	s.m.Live.Add(float64(b.Records))
}

// spill is called by the publisher, on a lost connection, for each
// unconfirmed live batch.
func (s *Shipper) spill(b Batch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	_ = s.sp.Append(spool.Entry{Body: b.Body, Records: b.Records, Ingest: b.Ingest})
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// rates updates the rate gauges every second.
func (s *Shipper) rates(ctx context.Context) {
	const n = int(rateWindow / time.Second)
	type sample struct{ live, drained float64 }
	var ring [n]sample // ring[i%n] was taken at tick i-n (or at the start)
	read := func() sample { return sample{counterValue(s.m.Live), counterValue(s.m.drained)} }
	for i := range ring {
		ring[i] = read()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sp.Sync() // SPOOL_FSYNC=interval: a quiet spool is not left unsynced
		cur, old := read(), ring[i%n]
		ring[i%n] = cur
		secs := float64(min(i+1, n))
		s.m.LiveRate.Set((cur.live - old.live) / secs)
		s.m.DrainRate.Set((cur.drained - old.drained) / secs)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}
