// Package app wires the consumer together: the control log reader, the
// Redis backends and their sink, the records intake, heartbeats, /healthz and
// /metrics.
//
// Startup order: the intake dials RabbitMQ (declaring the topology) and the
// control log reader folds conn.control from its first message; no record
// is consumed before the reader is Ready and its table is the one routing,
// so a consumer started after a weight change routes its very first record
// by the latest weights. From then on every change the reader folds is
// built into a new route off to the side and swapped in atomically; if
// building fails the old route keeps serving.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/backends"
	"github.com/connpipe/connpipe/services/consumer/internal/intake"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/ops"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Version is the consumer's build version, shown in logs.
var Version = "dev"

// App is a consumer ready to run.
type App struct {
	cfg    Config
	log    *slog.Logger
	host   string
	srv    *ops.Server
	reg    *prometheus.Registry
	m      *metrics
	sink   *backends.Sink
	reader *controllog.Reader
	intake *intake.Intake
	beats  *heartbeat.Publisher
	allow  *control.Allow // BACKEND_ALLOW: hosts this consumer connects to

	ready    atomic.Bool
	readyPos int64                         // log position when the log was first read (watch goroutine)
	gate     chan struct{}                 // closed once routing by the log's table
	applied  atomic.Pointer[control.Table] // latest table folded, for heartbeats
	kick     chan struct{}                 // heartbeat now
}

// Run builds the consumer and runs it until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	a, err := New(cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New validates cfg, binds the metrics address and builds the parts.
func New(cfg Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	initial, err := cfg.Table()
	if err != nil {
		return nil, err
	}
	allow, err := cfg.Allow()
	if err != nil {
		return nil, err
	}
	log = log.With("consumer", cfg.ConsumerID)
	if allow.Any() {
		log.Warn("BACKEND_ALLOW=*: any add_backend in the control log sends records to the host it names")
	}
	host, _ := os.Hostname()
	a := &App{cfg: cfg, log: log, host: host, reg: ops.NewRegistry(), allow: allow,
		gate: make(chan struct{}), kick: make(chan struct{}, 1)}
	a.m = newMetrics(a.reg)
	backends.SetClientLogger(log)
	creds, err := redisconn.LoadCredentials(cfg.RedisCAFile, cfg.RedisUsername, cfg.RedisPassword, initial.Backends)
	if err != nil {
		return nil, err
	}
	creds.Allow = allow
	if creds.Named, err = redisconn.ParseNamed(cfg.RedisCredentials); err != nil {
		return nil, err
	}
	a.sink, err = backends.New(backends.Config{
		Layout:  store.Layout{Prefix: cfg.RedisPrefix, Retention: cfg.Retention},
		V1:      cfg.StoreLayout == 1,
		Timeout: cfg.RedisTimeout, DrainedFallback: cfg.DrainedFallback,
		FailoverWait: cfg.FailoverWait, MinReplicas: cfg.MinReplicas, ReplicaTimeout: cfg.ReplicaTimeout,
		Redis:   creds,
		Logger:  log.With("component", "sink"),
		Metrics: backends.NewMetrics(a.reg),
	}, initial)
	if err != nil {
		return nil, err
	}
	// A refused password or an untrusted certificate will not mend by
	// itself: stop here, naming the backend, rather than run without it.
	if err := a.sink.CheckLogins(context.Background()); err != nil {
		_ = a.sink.Close()
		return nil, fmt.Errorf("BACKENDS: %w", err)
	}
	a.reader = controllog.New(controllog.Config{
		URL: cfg.AMQPURL, Name: "consumer " + cfg.ConsumerID + " control", Initial: initial, Logger: log,
	})
	registerControlSessions(a.reg, a.reader)
	a.applied.Store(initial)
	a.intake = intake.New(intake.Config{
		URL: cfg.AMQPURL, ConsumerID: cfg.ConsumerID, Prefetch: cfg.Prefetch, Store: a.sink,
		MaxMessageBytes: cfg.MaxMessageBytes, Retention: cfg.Retention,
		Gate:   a.gate,
		Logger: log.With("component", "intake"), Metrics: intake.NewMetrics(a.reg),
	})
	a.beats = heartbeat.NewPublisher(heartbeat.Config{
		URL: cfg.AMQPURL, Name: "consumer " + cfg.ConsumerID + " heartbeats",
		Beat: a.heartbeat, Interval: cfg.HeartbeatInterval, Kick: a.kick,
		Logger: log.With("component", "heartbeat"),
	})
	a.srv, err = ops.Listen(cfg.MetricsAddr, cfg.MetricsToken, a.reg, a.health)
	if err != nil {
		_ = a.sink.Close()
		return nil, fmt.Errorf("METRICS_ADDR=%q: %w", cfg.MetricsAddr, err)
	}
	return a, nil
}

// MetricsAddr is the bound address of /metrics and /healthz.
func (a *App) MetricsAddr() string { return a.srv.Addr() }

// Routing is the table records are routed by: the table in force less
// the backends BACKEND_ALLOW leaves out.
func (a *App) Routing() *control.Table { return a.sink.Table() }

// ID is the consumer id (CONSUMER_ID or the generated default).
func (a *App) ID() string { return a.cfg.ConsumerID }

// Ready reports whether the control log has been read and consuming began.
func (a *App) Ready() bool { return a.ready.Load() }

// Run runs the consumer until ctx ends, then stops consuming, stores and
// acks what is in hand, and closes.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("consumer starting", "version", Version, "weights", a.sink.Table().String(), "table", a.sink.Table().Describe(), "backend_allow", a.allow.String(),
		"prefetch", a.cfg.Prefetch, "retention", a.cfg.Retention, "metrics", a.MetricsAddr())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, unsubscribe := a.reader.Subscribe()
	defer unsubscribe()

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	fail := func(what string, err error) {
		if err != nil && ctx.Err() == nil {
			errs <- fmt.Errorf("%s: %w", what, err)
			cancel()
		}
	}
	wg.Go(func() { fail("metrics server", a.srv.Serve(ctx)) })
	wg.Go(func() { fail("control log", a.reader.Run(ctx)) })
	wg.Go(func() { fail("heartbeats", a.beats.Run(ctx)) })
	wg.Go(func() { a.watch(ctx, sub) })
	wg.Go(func() { a.sink.RunChecker(ctx) })

	err := a.intake.Run(ctx)
	cancel()
	wg.Wait()
	if cerr := a.sink.Close(); cerr != nil {
		a.log.Warn("close redis clients", "err", cerr)
	}
	select {
	case e := <-errs:
		err = errors.Join(e, err)
	default:
	}
	if err != nil {
		return err
	}
	a.log.Info("consumer stopped", "records_stored", a.sink.Stored(), "messages_acked", a.intake.Acked())
	return nil
}

// watch follows the control log's verdicts: metrics and logs for each,
// and a new route whenever the table changed.
func (a *App) watch(ctx context.Context, sub <-chan control.Result) {
	ready := a.reader.Ready()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ready:
			ready = nil
			t := a.reader.Table()
			a.readyPos = t.Position
			a.apply(t)
			a.ready.Store(true)
			a.m.ready.Set(1)
			close(a.gate)
			a.log.Info("control log read, consuming records", "version", t.Version, "position", t.Position, "weights", t.String())
		case res := <-sub:
			a.verdict(res)
			if a.ready.Load() {
				a.apply(a.reader.Table())
			} else {
				a.applied.Store(a.reader.Table())
			}
		}
	}
}

// verdict counts and logs one folded control message. Refusals read while
// catching up with the log's history are logged at Debug: they are old news.
func (a *App) verdict(res control.Result) {
	switch {
	case res.Err != nil:
		reason := RejectReason(res.Err)
		a.m.rejected.WithLabelValues(reason).Inc()
		level := slog.LevelWarn
		if !a.ready.Load() || res.Position <= a.readyPos {
			level = slog.LevelDebug
		}
		a.log.Log(context.Background(), level, "control change refused, routing unchanged", "position", res.Position,
			"reason", reason, "err", res.Err, "id", res.Message.ID, "by", res.Message.By)
	case res.Changed && res.Message.Op == control.OpAddBackend && a.allow.Check(*res.Message.Backend) != nil:
		// Folded like on every reader (the table and its version move on),
		// but this consumer does not connect to the host: apply leaves the
		// backend out of the table it routes by.
		err := a.allow.Check(*res.Message.Backend)
		a.m.rejected.WithLabelValues(RejectReason(err)).Inc()
		level := slog.LevelWarn
		if !a.ready.Load() || res.Position <= a.readyPos {
			level = slog.LevelDebug
		}
		a.log.Log(context.Background(), level, "control change refused by BACKEND_ALLOW, records never go to this backend",
			"position", res.Position, "reason", RejectReason(err), "err", err, "id", res.Message.ID, "by", res.Message.By)
	case res.Changed:
		a.m.applied.Inc()
	}
}

// apply makes t the routing table (if its version is new), less the
// backends BACKEND_ALLOW leaves out, and reports it.
func (a *App) apply(t *control.Table) {
	if cur := a.sink.Table(); t.Version != cur.Version {
		routed, out := a.allow.Filter(t)
		a.m.notAllowed.Set(float64(len(out)))
		if err := a.sink.SetTable(routed); err != nil {
			a.log.Error("cannot route by the new table, keeping the old one", "version", t.Version, "err", err)
			return
		}
		a.log.Info("routing table applied", "version", t.Version, "position", t.Position, "weights", t.String(), "table", routed.Describe(),
			"not_allowed", len(out))
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	a.applied.Store(t)
	a.m.version.Set(float64(t.Version))
	a.m.position.Set(float64(t.Position))
}

// heartbeat is what the consumer publishes on the heartbeat exchange.
func (a *App) heartbeat() heartbeat.Message {
	t := a.applied.Load()
	m := heartbeat.Message{
		Consumer: a.cfg.ConsumerID, Host: a.host,
		Version: t.Version, Position: t.Position, Weights: t.String(),
		Ready: a.ready.Load(), Records: a.sink.Stored(), Acked: a.intake.Acked(),
		Stored: a.sink.StoredBy(), Unacked: a.intake.Held(), DeadLettered: a.intake.DeadLettered(),
		SentAt: time.Now().UnixNano(), Interval: a.cfg.HeartbeatInterval.Milliseconds(),
	}
	m.SetBackends(a.out())
	return m
}

// out is the backends not up, with their state and its reason.
func (a *App) out() map[string]heartbeat.Backend {
	var m map[string]heartbeat.Backend
	for name, st := range a.sink.States() {
		if st.State == redisconn.StateUp {
			continue
		}
		if m == nil {
			m = map[string]heartbeat.Backend{}
		}
		m[name] = heartbeat.Backend{State: st.State, Reason: st.Reason, Since: st.Since.UnixNano()}
	}
	return m
}

// health is /healthz: ok when the log is read and RabbitMQ is connected.
func (a *App) health() error {
	switch {
	case !a.ready.Load():
		return errors.New("not ready: reading the control log")
	case !a.intake.Connected():
		return fmt.Errorf("not connected to rabbitmq: %s", a.intake.Broker())
	}
	return nil
}

// RejectReason names a refused control message's cause for the counter.
func RejectReason(err error) string {
	for _, c := range []struct {
		err    error
		reason string
	}{
		{control.ErrMalformed, "malformed"},
		{control.ErrUnknownOp, "unknown_op"},
		{control.ErrUnknownBackend, "unknown_backend"},
		{control.ErrBadWeight, "bad_weight"},
		{control.ErrNoCapacity, "no_capacity"},
		{control.ErrStaleVersion, "stale_version"},
		{control.ErrBadMode, "bad_mode"},
		{control.ErrBadBackend, "bad_backend"},
		{control.ErrDuplicate, "duplicate_backend"},
		{control.ErrNotAllowed, "backend_not_allowed"},
	} {
		if errors.Is(err, c.err) {
			return c.reason
		}
	}
	return "other"
}

type metrics struct {
	version, position, ready prometheus.Gauge
	notAllowed               prometheus.Gauge
	applied                  prometheus.Counter
	rejected                 *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connpipe_consumer_control_version", Help: "Version of the routing table in force.",
		}),
		position: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connpipe_consumer_control_position", Help: "Offset of the last control log message folded.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connpipe_consumer_ready", Help: "1 once the control log is read and records are consumed.",
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_consumer_control_applied_total", Help: "Control changes applied.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_control_rejected_total",
			Help: "Control messages refused, by reason (backend_not_allowed: folded, but outside BACKEND_ALLOW, so never connected).",
		}, []string{"reason"}),
		notAllowed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backends_not_allowed", Help: "Backends of the table in force left out because BACKEND_ALLOW does not list their host.",
		}),
	}
	reg.MustRegister(m.version, m.position, m.ready, m.applied, m.rejected, m.notAllowed)
	return m
}
