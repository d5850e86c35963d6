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
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// backend is one Redis instance and its client.
type backend struct {
	name, addr string
	rdb        *redis.Client
	sentinel   bool // a Sentinel-managed primary: it may fail over
	up         atomic.Bool

	mu        sync.Mutex // guards what follows
	state     redisconn.State
	reason    string // the error that set the state, passwords redacted
	since     time.Time
	probes    int       // failed write probes since it went out
	nextProbe time.Time // when the checker probes it next
	// back is when it last came back from a failover (failoverSettle).
	back time.Time
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
	opts := make([]redisconn.ClientOptions, len(t.Backends))
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
			be = &backend{name: b.Name, addr: redact.Addr(b.Addr), rdb: opts[i].NewClient(),
				sentinel: opts[i].Sentinel != nil, state: redisconn.StateUp, since: s.cfg.Now()}
			be.up.Store(true)
			s.pool[key] = be
			s.m.Up.WithLabelValues(b.Name).Set(1)
			s.setStateMetric(be.name, redisconn.StateUp)
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

func (s *Sink) options(b control.Backend) (redisconn.ClientOptions, error) {
	o, err := redisconn.OptionsFor(b, s.cfg.Redis)
	if err != nil {
		return o, err
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
				for _, st := range redisconn.ConsumerStates() {
					s.m.State.DeleteLabelValues(b.name, st.String())
				}
				s.m.Weight.DeleteLabelValues(b.name)
				s.m.Share.DeleteLabelValues(b.name)
			}
		}
	}
	return r
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
