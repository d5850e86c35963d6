package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/connpipe/connpipe/shared/store"
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
	// FailoverWait is how long the records of a sentinel backend that is
	// failing over wait for it before it leaves rotation and they go to
	// the others (REDIS_FAILOVER_WAIT); 30s if 0.
	FailoverWait time.Duration
	// MinReplicas is how many replicas must confirm a write (WAIT) before
	// its records count as stored (REDIS_MIN_REPLICAS); 0 asks none.
	MinReplicas int
	// ReplicaTimeout bounds that WAIT (REDIS_REPLICA_TIMEOUT); Timeout if 0.
	ReplicaTimeout time.Duration
	Now            func() time.Time // default time.Now
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
	if cfg.FailoverWait <= 0 {
		cfg.FailoverWait = 30 * time.Second
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = cfg.Timeout
	}
	s := &Sink{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, pool: map[string]*backend{}}
	s.stick.max = cfg.StickCache
	if err := s.SetTable(t); err != nil {
		return nil, err
	}
	return s, nil
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
	var prev *route
	for attempt, waits := 0, 0; ; {
		r := s.adopt()
		s.refill(msgs, assign, r != prev)
		prev = r
		s.syncHealth(r)
		fallback := !r.Routable() && s.cfg.DrainedFallback && s.routeDrained(r, msgs, assign)
		s.noteFallback(r, fallback)
		if !r.Routable() && !fallback {
			if err := s.hold(ctx, r, attempt, total); err != nil {
				return err
			}
			attempt++
			continue
		}
		attempt = 0
		if !fallback {
			s.route(ctx, r, msgs, assign)
		}
		out := s.write(ctx, r)
		if err := ctx.Err(); err != nil {
			return err
		}
		left, waiting := s.settle(msgs, assign, out)
		if left == 0 {
			return nil
		}
		if waiting == 0 {
			waits = 0
			continue
		}
		// A backend failing over: its records wait for it, a little longer
		// each time.
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNoBackend, ctx.Err())
		case <-time.After(backoff(waits)):
		}
		waits++
	}
}

// noteFallback logs when records start or stop going to drained backends.
func (s *Sink) noteFallback(r *route, fallback bool) {
	if fallback == s.onDr {
		return
	}
	s.onDr = fallback
	if fallback {
		s.log.Warn("no redis backend of positive weight can store records, storing them on drained ones (DRAINED_FALLBACK)",
			"states", s.stateSummary(r))
	} else {
		s.log.Info("routing by weight again")
	}
}

// hold waits before the next try while no backend can store records, and
// returns an error when ctx ends first.
func (s *Sink) hold(ctx context.Context, r *route, attempt, records int) error {
	wait := backoff(attempt)
	if attempt == 0 || (attempt+1)%20 == 0 {
		s.log.Warn("no redis backend can store records, holding them unacked", "records", records,
			"states", s.stateSummary(r), "retry_in", wait)
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNoBackend, ctx.Err())
	case <-time.After(wait):
		return nil
	}
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

// outcome is what a round's writes did, by backend index.
type outcome struct {
	failed  []bool // the write failed
	waiting []bool // ... on a backend failing over: its records wait for it
	held    []map[record.ID]store.Held
}

// settle marks what a write stored as done and returns how many records
// are left and how many of those wait for a backend failing over. Left
// are those of a failed backend (routed again, unless they wait), and
// those of a backend that held part of the write already (it wrote
// nothing; what it held is done and counted as a duplicate skipped, the
// rest is written again).
func (s *Sink) settle(msgs []*record.Batch, assign []int32, out outcome) (left, waiting int) {
	skipped, k := 0, 0
	for _, m := range msgs {
		for j := range m.Records {
			switch i := assign[k]; {
			case i < 0:
			case out.waiting[i]:
				left++
				waiting++
			case out.failed[i]:
				assign[k] = pending
				left++
			case out.held[i] != nil:
				if h, ok := out.held[i][m.ID]; ok && h.Has(j) {
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
	return left, waiting
}

// write writes the batches of r's backends in parallel and returns what
// each did: a failed backend is marked down, or waited for while it fails
// over; a backend that held part of its write already wrote nothing, and
// says what it held.
func (s *Sink) write(ctx context.Context, r *route) outcome {
	n := len(r.backends)
	out := outcome{failed: make([]bool, n), waiting: make([]bool, n), held: make([]map[record.ID]store.Held, n)}
	var wg sync.WaitGroup
	for i, be := range r.backends {
		b := s.batches[i]
		if b.Len() == 0 {
			continue
		}
		wg.Go(func() {
			h, err := s.writeOne(ctx, be, b)
			if err != nil {
				out.failed[i] = true
				if ctx.Err() == nil {
					s.m.WriteErrors.WithLabelValues(be.name).Inc()
					out.waiting[i] = s.failing(be, err)
				}
				return
			}
			s.serving(be)
			if len(h) > 0 {
				out.held[i] = make(map[record.ID]store.Held, len(h))
				for _, x := range h {
					out.held[i][x.ID] = x
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
	return out
}
