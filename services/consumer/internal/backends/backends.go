// Package backends is the consumer's side of the Redis instances of the
// routing table: a client and a health state for each, and the Sink that
// stores every round of records on them.
//
// Store takes a round of decoded messages, routes every record by the
// route in force (package routing decides the backend), groups the records
// per backend into one store.Buckets each and writes them to their backends
// in parallel, one pipelined round trip per backend. It returns only when every record is
// stored on some instance (or its context ends), so the caller may then ack
// the messages.
//
// # Health
//
// A backend whose write fails is taken out of rotation (metric backend_up,
// a Warn log) in a state named by the error: oom (Redis is at maxmemory),
// readonly (a replica), loading (reading its dataset at start), masterdown
// (a replica that lost its master), auth (credentials refused) or down
// (unreachable, a timeout, anything else); its records of the round are
// routed again over the backends still up and written there. The checker
// puts a backend back only after a real write probe succeeds (a SET of
// 64 KiB with a short expiry: a PING answers even at maxmemory), first CheckInterval
// after it went out and then at doubling intervals up to MaxProbeInterval,
// so an instance that accepts connections but refuses writes changes state
// once instead of flapping. Each state change is logged once and counted
// (connpipe_consumer_backend_state_changes_total{state}); the state in
// force is connpipe_consumer_backend_state{state} and goes into the
// consumer's heartbeat (States). The route restarts its cycle whenever
// the set of usable backends changes. While no backend of positive weight
// is up, records wait unacked, or with DrainedFallback go to the backends
// of weight 0 that are up, in turn. When no backend
// can store, Store keeps retrying with backoff: the messages stay unacked on
// the broker and nothing is dropped.
//
// # Exactly once in effect
//
// Delivery is at least once: a batch may come again (a redelivery after a
// lost ack, a republish after a lost confirm, the spool after a capture
// restart). A batch that carries its identity (record.ID, every batch
// capture makes) is stored once all the same: its records are routed by
// their place in the producer's stream, so a second delivery sends each
// record to the instance the first sent it to, and the write there (one
// Lua call, package store) finds the record marked, writes nothing and
// says what the instance holds; those records count as duplicates skipped
// (connpipe_consumer_duplicates_skipped_total) and the rest is written.
// Records without an identity (hand-published JSON, version 1 batches) are
// stored again if delivered again.
//
// Two cases can still store a record twice, and only around a failure: a
// write that timed out after Redis applied it, whose records then go to
// another instance; and a second delivery routed while the set of
// instances in rotation differs from the first's. Nothing is ever lost.
//
// # Routing
//
// The table's mode and stick table are package routing's: the route picks
// each record's backend, and with "sticky" on routing.Stick.Claim asks the
// stick home (routing.StickHome) for the owners of a round's unknown keys.
// A key of a down backend goes to the mode's choice meanwhile (a sticky
// key's entry is kept, so it returns to its owner when that rejoins). A
// table with a new backend gets a client for it at once, so its next round
// can store there; a backend that left the table has its client closed
// once no route uses it.
//
// Each consumer caches stick owners (bounded, StickCache entries) for
// StickRefresh, so a busy key costs one lookup per StickRefresh per
// consumer, not one per record; an entry's TTL is retention + StickRefresh,
// renewed by every lookup. When the stick home is down every unknown key is
// routed by the mode's choice and counted
// (connpipe_consumer_stick_keys_total{result="fallback"}); when the home
// changes, the cache starts afresh. With sticky off none of this runs.
package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Config configures a Sink.
type Config struct {
	Layout store.Layout
	// V1 writes layout v1 (STORE_LAYOUT=1): for a rolling upgrade while
	// an admin that reads only v1 is still running.
	V1      bool
	Timeout time.Duration // Redis dial, read and write timeout
	// Redis is the login for backends whose address has none, and the
	// authority trusted for rediss://.
	Redis         redisconn.Credentials
	CheckInterval time.Duration // first write probe of a backend out of rotation; 500ms if 0
	// MaxProbeInterval caps the doubling interval between write probes of a
	// backend that stays out; 30s if 0.
	MaxProbeInterval time.Duration
	Logger           *slog.Logger
	Metrics          *Metrics // nil: metrics are kept but not registered
	// StickRefresh is how long a consumer trusts a cached stick owner
	// before asking the stick home again (which renews the entry); default
	// min(retention/4, 10s).
	StickRefresh time.Duration
	// StickCache bounds the cached stick owners; default 100,000.
	StickCache int
	// DrainedFallback lets records go to instances of weight 0 that are up
	// while no instance of positive weight can take them, instead of
	// waiting unacked (DRAINED_FALLBACK).
	DrainedFallback bool
	Now             func() time.Time // default time.Now
}

// Metrics are the sink's Prometheus collectors.
type Metrics struct {
	Stored       *prometheus.CounterVec // records stored, by backend
	WriteErrors  *prometheus.CounterVec // failed writes, by backend
	Up           *prometheus.GaugeVec   // 1 while a backend is in rotation
	Weight       *prometheus.GaugeVec   // weight in the table in force
	Share        *prometheus.GaugeVec   // target share: weight / sum of weights
	BatchRecords prometheus.Histogram   // records per write to one backend
	Stick        *prometheus.CounterVec // keys routed by the stick table, by where the owner came from
	State        *prometheus.GaugeVec   // 1 for the backend's state in force, by backend and state
	StateChanges *prometheus.CounterVec // state changes, by backend and new state
	Duplicates   prometheus.Counter     // records of a second delivery found stored already, not stored again
}

// Backend states.
const (
	StateUp         = "up"
	StateOOM        = "oom"
	StateReadonly   = "readonly"
	StateLoading    = "loading"
	StateMasterDown = "masterdown"
	StateAuth       = "auth"
	StateDown       = "down"
)

var states = []string{StateUp, StateOOM, StateReadonly, StateLoading, StateMasterDown, StateAuth, StateDown}

// Classify names the state a Redis error puts a backend in.
func Classify(err error) string {
	for _, c := range []struct{ prefix, state string }{
		{"OOM", StateOOM},
		{"READONLY", StateReadonly},
		{"LOADING", StateLoading},
		{"MASTERDOWN", StateMasterDown},
		{"NOAUTH", StateAuth},
		{"WRONGPASS", StateAuth},
		{"NOPERM", StateAuth},
	} {
		// A script's error carries the command's error after its own
		// words: look for the code anywhere in a Redis error reply.
		var rerr redis.Error
		if redis.HasErrorPrefix(err, c.prefix) || (errors.As(err, &rerr) && strings.Contains(rerr.Error(), c.prefix+" ")) {
			return c.state
		}
	}
	return StateDown
}

// NewMetrics creates the sink's metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_records_stored_total", Help: "Records stored on a Redis backend.",
		}, []string{"backend"}),
		WriteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_write_errors_total", Help: "Writes to a Redis backend that failed.",
		}, []string{"backend"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_up", Help: "1 while the Redis backend is in rotation, 0 while it is ejected.",
		}, []string{"backend"}),
		Weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_weight", Help: "Weight of the backend in the routing table in force.",
		}, []string{"backend"}),
		Share: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_target_share",
			Help: "Share of records (weighted) or keys (hash) the table gives the backend: weight / sum of weights. The observed share is rate(connpipe_consumer_records_stored_total[1m]) over its sum.",
		}, []string{"backend"}),
		BatchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "connpipe_consumer_store_batch_records", Help: "Records per write round to one Redis backend.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		Stick: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_stick_keys_total",
			Help: "Keys routed by the stick table per round, by result: cache (owner cached), redis (read from the stick home), fallback (stick home down: the mode's choice).",
		}, []string{"result"}),
		State: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_state",
			Help: "1 for the Redis backend's state in force: up, oom, readonly, loading, masterdown, auth or down.",
		}, []string{"backend", "state"}),
		StateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_backend_state_changes_total", Help: "Changes of a Redis backend's state, by the state entered.",
		}, []string{"backend", "state"}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_consumer_duplicates_skipped_total",
			Help: "Records of a second delivery of a batch (a redelivery, a republish, the spool after a restart) found stored already and not stored again.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Stored, m.WriteErrors, m.Up, m.Weight, m.Share, m.BatchRecords, m.Stick, m.State, m.StateChanges, m.Duplicates)
	}
	return m
}

// backend is one Redis instance and its client.
type backend struct {
	name, addr string
	rdb        *redis.Client
	up         atomic.Bool

	mu        sync.Mutex // guards what follows
	state     string
	reason    string // the error that set the state
	since     time.Time
	probes    int       // failed write probes since it went out
	nextProbe time.Time // when the checker probes it next
}

// BackendState is a backend's state as status reports it.
type BackendState struct {
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// route is a routing table made ready for use (package routing) with the
// client of every table entry, in table order.
type route struct {
	*routing.Route
	backends []*backend
}

// Sink writes records to the Redis pool. Store must be called from one
// goroutine at a time; SetTable, Up and the checker may run concurrently
// with it.
type Sink struct {
	cfg Config
	log *slog.Logger
	m   *Metrics

	latest atomic.Pointer[route] // newest route, swapped in by SetTable

	mu   sync.Mutex
	pool map[string]*backend // name+"="+addr → backend, every client alive

	// Owned by the goroutine calling Store.
	cur     *route
	batches []*store.Buckets
	assign  []int32
	stored  atomic.Uint64
	skipped atomic.Uint64 // records found stored already
	byName  sync.Map      // backend name → *atomic.Uint64 records stored there
	stick   stickCache
	owner   map[uint64]int // key hash → backend index, for one sticky round
	hashes  []uint64
	misses  []uint64
	drained []int // weight-0 backends up, for DrainedFallback
	nextDr  int
	onDr    bool // the last round went to drained backends
}

// Assignment markers in Sink.assign besides backend indexes.
const (
	pending int32 = -1 // to be routed
	done    int32 = -2 // stored
)

// New returns a sink routing by table t.
func New(cfg Config, t *control.Table) (*Sink, error) {
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 500 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MaxProbeInterval <= 0 {
		cfg.MaxProbeInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.StickRefresh <= 0 {
		cfg.StickRefresh = min(cfg.Layout.Retention/4, 10*time.Second)
		if cfg.StickRefresh <= 0 {
			cfg.StickRefresh = 10 * time.Second
		}
	}
	if cfg.StickCache <= 0 {
		cfg.StickCache = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sink{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, pool: map[string]*backend{}}
	s.stick.max = cfg.StickCache
	if err := s.SetTable(t); err != nil {
		return nil, err
	}
	return s, nil
}

// SetTable builds the route for t off to the side and swaps it in; the
// next round routes by it, from a fresh cycle. On error the route in force
// is kept.
func (s *Sink) SetTable(t *control.Table) error {
	rt, err := routing.NewRoute(t)
	if err != nil {
		return fmt.Errorf("routing table version %d: %w", tableVersion(t), err)
	}
	r := &route{Route: rt, backends: make([]*backend, len(t.Backends))}
	total := 0
	for _, b := range t.Backends {
		total += b.Weight
	}
	opts := make([]*redis.Options, len(t.Backends))
	for i, b := range t.Backends {
		if opts[i], err = s.options(b); err != nil {
			return fmt.Errorf("routing table version %d: backend %q: %w", tableVersion(t), b.Name, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range t.Backends {
		key := b.Name + "=" + b.Addr + "[" + b.Credential + "]"
		be := s.pool[key]
		if be == nil {
			// addr is for logs: never the password.
			be = &backend{name: b.Name, addr: control.RedactAddr(b.Addr), rdb: redis.NewClient(opts[i]), state: StateUp, since: s.cfg.Now()}
			be.up.Store(true)
			s.pool[key] = be
			s.m.Up.WithLabelValues(b.Name).Set(1)
			s.setStateMetric(be.name, StateUp)
		}
		r.backends[i] = be
		s.m.Weight.WithLabelValues(b.Name).Set(float64(b.Weight))
		s.m.Share.WithLabelValues(b.Name).Set(float64(b.Weight) / float64(total))
	}
	s.latest.Store(r)
	return nil
}

func tableVersion(t *control.Table) int64 {
	if t == nil {
		return -1
	}
	return t.Version
}

func (s *Sink) options(b control.Backend) (*redis.Options, error) {
	o, err := redisconn.OptionsFor(b, s.cfg.Redis)
	if err != nil {
		return nil, err
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = s.cfg.Timeout, s.cfg.Timeout, s.cfg.Timeout
	// Fail fast and let the health logic route around a dead instance
	// instead of retrying inside the client.
	o.MaxRetries, o.DialerRetries, o.PoolSize = 1, 1, 4
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return o, nil
}

// CheckLogins PINGs every backend of the table in force at once and
// returns an error naming each one that refuses the login or whose TLS
// certificate is not trusted: a configuration error, unlike an instance
// that is down (which the health logic routes around).
func (s *Sink) CheckLogins(ctx context.Context) error {
	r := s.latest.Load()
	errs := make([]error, len(r.backends))
	var wg sync.WaitGroup
	for i, b := range r.backends {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			defer cancel()
			if err := b.rdb.Ping(ctx).Err(); redisconn.IsConfigError(err) {
				errs[i] = fmt.Errorf("backend %q at %s: %w", b.name, b.addr, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Table is the routing table in force.
func (s *Sink) Table() *control.Table { return s.latest.Load().Table() }

// Up reports whether the backend named name is in rotation.
func (s *Sink) Up(name string) bool {
	for _, b := range s.latest.Load().backends {
		if b.name == name {
			return b.up.Load()
		}
	}
	return false
}

// Stored is the number of records stored since start.
func (s *Sink) Stored() uint64 { return s.stored.Load() }

// Skipped is the number of records of second deliveries that were found
// stored already and not stored again.
func (s *Sink) Skipped() uint64 { return s.skipped.Load() }

// StoredBy is the number of records stored since start on each backend.
func (s *Sink) StoredBy() map[string]uint64 {
	out := map[string]uint64{}
	s.byName.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// adopt switches the Store goroutine to the newest route and retires the
// clients that neither it nor a newer route uses.
func (s *Sink) adopt() *route {
	r := s.latest.Load()
	if r == s.cur {
		return r
	}
	s.cur = r
	for len(s.batches) < len(r.backends) {
		b := store.NewBuckets()
		b.V1 = s.cfg.V1
		s.batches = append(s.batches, b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inUse := map[*backend]bool{}
	for _, b := range r.backends {
		inUse[b] = true
	}
	for _, b := range s.latest.Load().backends {
		inUse[b] = true
	}
	for key, b := range s.pool {
		if !inUse[b] {
			delete(s.pool, key)
			_ = b.rdb.Close()
			s.log.Info("redis backend left the table", "backend", b.name, "addr", b.addr)
			if _, named := s.latest.Load().Index(b.name); !named {
				s.m.Up.DeleteLabelValues(b.name)
				for _, st := range states {
					s.m.State.DeleteLabelValues(b.name, st)
				}
				s.m.Weight.DeleteLabelValues(b.name)
				s.m.Share.DeleteLabelValues(b.name)
			}
		}
	}
	return r
}

// ErrNoBackend reports that no backend could store a round before the
// context ended.
var ErrNoBackend = errors.New("no redis backend can store records")

// Store routes and writes every record of msgs. It returns nil once every
// record is stored on some backend, or an error when ctx ends first; then
// some records may be stored and the caller must not ack the messages.
func (s *Sink) Store(ctx context.Context, msgs []*record.Batch) error {
	total := 0
	for _, m := range msgs {
		total += len(m.Records)
	}
	if total == 0 {
		return nil
	}
	if cap(s.assign) < total {
		s.assign = make([]int32, total)
	}
	assign := s.assign[:total]
	for k := range assign {
		assign[k] = pending
	}
	left := total
	for attempt := 0; ; {
		r := s.adopt()
		s.syncHealth(r)
		fallback := !r.Routable() && s.cfg.DrainedFallback && s.routeDrained(r, msgs, assign)
		if fallback != s.onDr {
			s.onDr = fallback
			if fallback {
				s.log.Warn("no redis backend of positive weight can store records, storing them on drained ones (DRAINED_FALLBACK)",
					"states", s.stateSummary(r))
			} else {
				s.log.Info("routing by weight again")
			}
		}
		if !r.Routable() && !fallback {
			wait := backoff(attempt)
			attempt++
			if attempt == 1 || attempt%20 == 0 {
				s.log.Warn("no redis backend can store records, holding them unacked", "records", left,
					"states", s.stateSummary(r), "retry_in", wait)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %w", ErrNoBackend, ctx.Err())
			case <-time.After(wait):
			}
			continue
		}
		attempt = 0
		if !fallback {
			s.route(ctx, r, msgs, assign)
		}
		failed, held := s.write(ctx, r)
		if err := ctx.Err(); err != nil {
			return err
		}
		if left = s.settle(msgs, assign, failed, held); left == 0 {
			return nil
		}
	}
}

// routeDrained assigns every pending record to the backends of weight 0
// that are up, in turn, and reports whether there was one.
func (s *Sink) routeDrained(r *route, msgs []*record.Batch, assign []int32) bool {
	s.drained = s.drained[:0]
	for i, b := range r.backends {
		if r.Table().Backends[i].Weight == 0 && b.up.Load() {
			s.drained = append(s.drained, i)
		}
	}
	if len(s.drained) == 0 {
		return false
	}
	for _, b := range s.batches {
		b.Reset()
	}
	k := 0
	for _, m := range msgs {
		for j := range m.Records {
			if assign[k] == pending {
				i := s.drained[s.nextDr%len(s.drained)]
				s.nextDr++
				assign[k] = int32(i)
				s.add(i, m, j)
			}
			k++
		}
	}
	return true
}

// add adds record j of m to backend i's write, with its batch mark.
func (s *Sink) add(i int, m *record.Batch, j int) {
	rec := &m.Records[j]
	s.batches[i].AddMarked(store.Bucket(rec.TS, m.Ingest, m.Received), rec, m.ID, j, len(m.Records))
}

// pick is r's choice for record j of m, whose key hash is h: a record of
// a named batch by its place in its producer's stream, so that a second
// delivery goes where the first went (routing.Schedule.At).
func pick(r *route, h uint64, m *record.Batch, j int) int {
	if m.ID.IsZero() {
		return r.Pick(h)
	}
	return r.PickAt(h, m.First+uint64(j), m.ID.Producer)
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, time.Second)
}

// syncHealth tells the route which backends are up.
func (s *Sink) syncHealth(r *route) {
	for i, b := range r.backends {
		r.SetUp(i, b.up.Load())
	}
}

// route assigns every pending record a backend and adds it to that
// backend's batch.
func (s *Sink) route(ctx context.Context, r *route, msgs []*record.Batch, assign []int32) {
	for _, b := range s.batches {
		b.Reset()
	}
	if r.Table().Sticky {
		s.routeSticky(ctx, r, msgs, assign)
		return
	}
	k := 0
	for _, m := range msgs {
		for j := range m.Records {
			if assign[k] == pending {
				var h uint64
				if r.Hashed() {
					h = r.Key(&m.Records[j])
				}
				i := pick(r, h, m, j)
				assign[k] = int32(i)
				s.add(i, m, j)
			}
			k++
		}
	}
}

// settle marks what a write stored as done and returns how many records
// are left: those of a failed backend, and those of a backend that held
// part of the write already (it wrote nothing; what it held is done and
// counted as a duplicate skipped, the rest is written again).
func (s *Sink) settle(msgs []*record.Batch, assign []int32, failed []bool, held []map[record.ID]store.Held) int {
	left, skipped, k := 0, 0, 0
	for _, m := range msgs {
		for j := range m.Records {
			switch i := assign[k]; {
			case i < 0:
			case failed[i]:
				assign[k] = pending
				left++
			case held[i] != nil:
				if h, ok := held[i][m.ID]; ok && h.Has(j) {
					assign[k] = done
					skipped++
				} else {
					assign[k] = pending
					left++
				}
			default:
				assign[k] = done
			}
			k++
		}
	}
	if skipped > 0 {
		s.m.Duplicates.Add(float64(skipped))
		s.skipped.Add(uint64(skipped))
	}
	return left
}

// write writes the batches of r's backends in parallel and returns which
// failed (a failed backend is marked down) and, for a backend that held
// part of its write already and so wrote nothing, what it held.
func (s *Sink) write(ctx context.Context, r *route) ([]bool, []map[record.ID]store.Held) {
	failed := make([]bool, len(r.backends))
	held := make([]map[record.ID]store.Held, len(r.backends))
	var wg sync.WaitGroup
	for i, be := range r.backends {
		b := s.batches[i]
		if b.Len() == 0 {
			continue
		}
		wg.Go(func() {
			h, err := s.cfg.Layout.Write(ctx, be.rdb, b)
			if len(h) > 0 {
				held[i] = make(map[record.ID]store.Held, len(h))
				for _, x := range h {
					held[i][x.ID] = x
				}
				return
			}
			if err != nil {
				failed[i] = true
				if ctx.Err() == nil {
					s.m.WriteErrors.WithLabelValues(be.name).Inc()
					s.markDown(be, err)
				}
				return
			}
			s.m.Stored.WithLabelValues(be.name).Add(float64(b.Len()))
			s.m.BatchRecords.Observe(float64(b.Len()))
			s.stored.Add(uint64(b.Len()))
			n, _ := s.byName.LoadOrStore(be.name, new(atomic.Uint64))
			n.(*atomic.Uint64).Add(uint64(b.Len()))
		})
	}
	wg.Wait()
	return failed, held
}

// markDown takes b out of rotation in the state err names. A backend
// already out only changes state (logged once per change).
func (s *Sink) markDown(b *backend, err error) {
	state := Classify(err)
	now := s.cfg.Now()
	b.mu.Lock()
	prev, upFor := b.state, now.Sub(b.since)
	b.state, b.reason = state, err.Error()
	if prev != state {
		b.since = now
	}
	wentOut := b.up.CompareAndSwap(true, false)
	if wentOut {
		// A backend that fails again soon after it came back (Redis just
		// under maxmemory takes a small write, then refuses the next)
		// keeps its longer wait; one that served a while starts afresh.
		if upFor > s.cfg.MaxProbeInterval {
			b.probes = 0
		} else {
			b.probes++
		}
		b.nextProbe = now.Add(s.probeWait(b.probes))
	}
	b.mu.Unlock()
	if prev != state {
		s.stateChanged(b, state)
	}
	switch {
	case wentOut:
		s.m.Up.WithLabelValues(b.name).Set(0)
		s.log.Warn("redis backend out of rotation", "backend", b.name, "addr", b.addr, "state", state, "err", err)
	case prev != state:
		s.log.Warn("redis backend out of rotation, state changed", "backend", b.name, "addr", b.addr, "state", state, "was", prev, "err", err)
	}
}

func (s *Sink) stateChanged(b *backend, state string) {
	s.setStateMetric(b.name, state)
	s.m.StateChanges.WithLabelValues(b.name, state).Inc()
}

func (s *Sink) setStateMetric(name, state string) {
	for _, st := range states {
		v := 0.0
		if st == state {
			v = 1
		}
		s.m.State.WithLabelValues(name, st).Set(v)
	}
}

// States reports the state of every backend of the table in force.
func (s *Sink) States() map[string]BackendState {
	out := map[string]BackendState{}
	for _, b := range s.latest.Load().backends {
		b.mu.Lock()
		out[b.name] = BackendState{State: b.state, Reason: b.reason, Since: b.since}
		b.mu.Unlock()
	}
	return out
}

// stateSummary lists the backends of r and their states, for a log line.
func (s *Sink) stateSummary(r *route) string {
	var sb strings.Builder
	for i, b := range r.backends {
		if i > 0 {
			sb.WriteByte(' ')
		}
		b.mu.Lock()
		sb.WriteString(b.name + "=" + b.state)
		b.mu.Unlock()
	}
	return sb.String()
}

// probeWait is the wait before the next write probe after n failed ones:
// CheckInterval doubled n times, at most MaxProbeInterval.
func (s *Sink) probeWait(n int) time.Duration {
	return min(s.cfg.CheckInterval<<min(n, 16), s.cfg.MaxProbeInterval)
}

// RunChecker probes the backends out of rotation with a real write when
// their probe is due and puts them back in rotation when it succeeds. It
// returns when ctx ends.
func (s *Sink) RunChecker(ctx context.Context) {
	t := time.NewTicker(min(s.cfg.CheckInterval, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		s.mu.Lock()
		var due []*backend
		for _, b := range s.pool {
			if b.up.Load() {
				continue
			}
			b.mu.Lock()
			if !now.Before(b.nextProbe) {
				due = append(due, b)
			}
			b.mu.Unlock()
		}
		s.mu.Unlock()
		for _, b := range due {
			s.probe(ctx, b)
		}
	}
}

// probeBytes is the size of the write probe: that of a large round's
// write, so that an instance just under maxmemory, which takes a tiny
// write and refuses the next real one, stays out.
const probeBytes = 64 << 10

var probeValue = strings.Repeat("p", probeBytes)

// probe writes a short-lived key to b: success puts b back in rotation, a
// failure sets its state and doubles the wait before the next probe.
func (s *Sink) probe(ctx context.Context, b *backend) {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	err := b.rdb.Set(pctx, s.cfg.Layout.ProbeKey(), probeValue, time.Second).Err()
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := s.cfg.Now()
	if err == nil {
		b.mu.Lock()
		out := now.Sub(b.since)
		b.state, b.reason, b.since = StateUp, "", now
		b.mu.Unlock()
		if b.up.CompareAndSwap(false, true) {
			s.m.Up.WithLabelValues(b.name).Set(1)
			s.stateChanged(b, StateUp)
			s.log.Info("redis backend accepts writes again, back in rotation", "backend", b.name, "addr", b.addr,
				"out_for", out.Round(time.Millisecond))
		}
		return
	}
	state := Classify(err)
	b.mu.Lock()
	prev := b.state
	b.state, b.reason = state, err.Error()
	if prev != state {
		b.since = now
	}
	b.probes++
	b.nextProbe = now.Add(s.probeWait(b.probes))
	b.mu.Unlock()
	if prev != state {
		s.stateChanged(b, state)
		s.log.Warn("redis backend out of rotation, state changed", "backend", b.name, "addr", b.addr, "state", state, "was", prev, "err", err)
	}
}

// Close closes every Redis client.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for key, b := range s.pool {
		errs = append(errs, b.rdb.Close())
		delete(s.pool, key)
	}
	return errors.Join(errs...)
}

// clientLog sends the Redis client's own messages (dial failures and the
// like, one per attempt) to slog at Debug: the sink reports what matters
// itself, once per state change.
type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// SetClientLogger routes the Redis client library's log (a process-wide
// setting) to log at Debug.
func SetClientLogger(log *slog.Logger) { redis.SetLogger(clientLog{log}) }
