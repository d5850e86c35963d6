// Package app wires admin's server: the control-log reader, the heartbeat
// listener, the Redis clients and the HTTP API.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/services/admin/internal/members"
	"github.com/connpipe/connpipe/services/admin/internal/queues"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/services/admin/internal/tally"
	"github.com/connpipe/connpipe/services/admin/internal/web"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/ops"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// Config is admin's configuration, from the environment.
//
// ADMIN_TOKEN guards every write. Serving without one is refused unless
// ADMIN_INSECURE=true, which accepts writes from anyone who can reach
// HTTP_ADDR — only for a loopback address on a machine of your own.
type Config struct {
	AMQPURL         string        `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/"`
	HTTPAddr        string        `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080"`
	Token           string        `envconfig:"ADMIN_TOKEN"`
	Insecure        bool          `envconfig:"ADMIN_INSECURE" default:"false"`
	Backends        string        `envconfig:"BACKENDS" default:"redis-a=127.0.0.1:6379,redis-b=127.0.0.1:6380"`
	Weights         string        `envconfig:"WEIGHTS" default:"redis-a=30,redis-b=70"`
	RedisPrefix     string        `envconfig:"REDIS_PREFIX" default:"cp:"`
	Retention       time.Duration `envconfig:"RETENTION" default:"5m"`
	ConsumerTimeout time.Duration `envconfig:"CONSUMER_TIMEOUT" default:"5s"`
	// CaptureMetricsURL lists the captures' /metrics (comma-separated),
	// scraped for status and the web page's capture panel; a host name
	// that resolves to several addresses (a scaled service) is every one
	// of them. Empty shows none.
	CaptureMetricsURL string `envconfig:"CAPTURE_METRICS_URL"`
	LogLevel          string `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat         string `envconfig:"LOG_FORMAT" default:"auto"`
}

// Load reads the configuration from the environment and checks it.
func Load() (Config, error) {
	var c Config
	if err := config.Load(&c); err != nil {
		return c, err
	}
	_, err := c.Validate()
	return c, err
}

// Validate checks the configuration and builds the initial routing table.
func (c Config) Validate() (*control.Table, error) {
	c.Token = strings.TrimSpace(c.Token)
	if c.Token == "" && !c.Insecure {
		return nil, errors.New("ADMIN_TOKEN is empty: set a token for writes, or ADMIN_INSECURE=true to accept writes without one")
	}
	if c.Retention <= 0 {
		return nil, fmt.Errorf("RETENTION=%s: must be positive", c.Retention)
	}
	if c.ConsumerTimeout <= 0 {
		return nil, fmt.Errorf("CONSUMER_TIMEOUT=%s: must be positive", c.ConsumerTimeout)
	}
	if c.RedisPrefix == "" {
		return nil, errors.New("REDIS_PREFIX is empty")
	}
	if c.HTTPAddr == "" {
		return nil, errors.New("HTTP_ADDR is empty")
	}
	if _, err := capturestats.ParseURLs(c.CaptureMetricsURL); err != nil {
		return nil, err
	}
	bs, err := config.Backends(c.Backends, c.Weights)
	if err != nil {
		return nil, err
	}
	t, err := control.NewTable(bs)
	if err != nil {
		return nil, fmt.Errorf("BACKENDS/WEIGHTS: %w", err)
	}
	return t, nil
}

// Server is a listening admin.
type Server struct {
	cfg      Config
	log      *slog.Logger
	http     *ops.Server
	reader   *controllog.Reader
	listener *members.Listener
	pool     *readback.Pool
	queues   *queues.Prober
	members  *members.Set
	bound    chan struct{}
	once     sync.Once
}

// Listen builds admin and binds HTTP_ADDR; Serve runs it.
func Listen(cfg Config, log *slog.Logger) (*Server, error) {
	initial, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	if cfg.Token == "" {
		log.Warn("ADMIN_INSECURE=true and no ADMIN_TOKEN: writes are accepted without a token", "addr", cfg.HTTPAddr)
	}
	host, _ := os.Hostname()
	name := "admin"
	if host != "" {
		name += "@" + host
	}
	// go-redis reports dial failures itself; the status endpoint shows an
	// unreachable backend, so its own lines go to Debug.
	// The setting is process-wide: the first server's logger keeps it.
	redisLogOnce.Do(func() { redis.SetLogger(redisLog{log.With("component", "redis")}) })
	s := &Server{cfg: cfg, log: log, bound: make(chan struct{})}
	s.reader = controllog.New(controllog.Config{URL: cfg.AMQPURL, Name: name, Initial: initial, Logger: log,
		Seed: true, SnapshotEvery: controllog.DefaultSnapshotEvery})
	s.members = members.New(cfg.ConsumerTimeout, time.Now)
	s.pool = &readback.Pool{Options: func(addr string) *redis.Options {
		return &redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, MaxRetries: 1}
	}}

	reg := ops.NewRegistry()
	metrics := api.NewMetrics(reg, s.members.Alive,
		func() int64 { return s.reader.Table().Version }, s.reader.IsReady)
	s.listener = &members.Listener{
		URL: cfg.AMQPURL, Name: name + "/heartbeats", Set: s.members, Log: log.With("component", "heartbeats"),
		Counters: members.Counters{Received: metrics.HeartbeatOK, Invalid: metrics.HeartbeatInvalid},
		Bound:    func() { s.once.Do(func() { close(s.bound) }) },
	}
	s.http, err = ops.Listen(cfg.HTTPAddr, reg, func() error {
		if !s.reader.IsReady() {
			return errors.New("control log not read yet")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("HTTP_ADDR=%s: %w", cfg.HTTPAddr, err)
	}
	layout := store.Layout{Prefix: cfg.RedisPrefix, Retention: cfg.Retention}
	s.queues = &queues.Prober{URL: cfg.AMQPURL, Name: name + "/queues"}
	apiCfg := api.Config{
		Token: strings.TrimSpace(cfg.Token), Control: s.reader, Members: s.members,
		Records: &readback.Reader{Layout: layout, Clients: s.pool},
		Redis:   func(addr string) redis.Cmdable { return s.pool.Redis(addr) },
		Tally: tally.New(tally.Config{Layout: layout, Log: log.With("component", "tally"),
			Client: func(addr string) redis.Cmdable { return s.pool.Redis(addr) }}),
		Queues:  s.queues,
		Metrics: metrics, Log: log,
	}
	if urls, _ := capturestats.ParseURLs(cfg.CaptureMetricsURL); len(urls) > 0 {
		apiCfg.Capture = &capturestats.Set{URLs: urls}
	}
	api.New(apiCfg).Register(s.http.Mux)
	web.Register(s.http.Mux)
	return s, nil
}

// Addr is the bound HTTP address.
func (s *Server) Addr() string { return s.http.Addr() }

// Ready is closed once the control log has been read.
func (s *Server) Ready() <-chan struct{} { return s.reader.Ready() }

// HeartbeatsBound is closed once the heartbeat queue is first consuming.
func (s *Server) HeartbeatsBound() <-chan struct{} { return s.bound }

// Serve runs until ctx ends or the HTTP server fails.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.pool.Close()
	defer s.queues.Close()
	s.log.Info("admin serving", "addr", s.Addr(), "amqp", broker.Redact(s.cfg.AMQPURL), "weights", s.reader.Table().String())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{s.reader.Run, s.listener.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("admin component stopped", "err", err)
			}
		}()
	}
	err := s.http.Serve(ctx)
	cancel()
	wg.Wait()
	return err
}

// Run listens and serves until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := Listen(cfg, log)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

var redisLogOnce sync.Once

// redisLog sends go-redis's internal messages to slog at Debug.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
