// Package app wires admin's server: the control-log reader, the heartbeat
// listener, the Redis clients and the HTTP API.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/services/admin/internal/members"
	"github.com/connpipe/connpipe/services/admin/internal/operators"
	"github.com/connpipe/connpipe/services/admin/internal/queues"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/services/admin/internal/tally"
	"github.com/connpipe/connpipe/services/admin/internal/web"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/ops"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// Config is admin's configuration, from the environment.
//
// ADMIN_TOKEN guards every write, and every read of the weights, status,
// stats and records; ADMIN_READ_TOKEN, when set, is a second token good
// for reads only. Serving without ADMIN_TOKEN is refused unless
// ADMIN_INSECURE=true, which accepts writes (and, without
// ADMIN_READ_TOKEN, reads) from anyone who can reach HTTP_ADDR — only for
// a loopback address on a machine of your own.
//
// HTTP_ADDR serves the API, the page and /healthz; METRICS_ADDR serves
// /metrics and /healthz, without a token, for a scraper on the same
// network. The API answers only requests whose Host is in
// ADMIN_ALLOWED_HOSTS (default localhost, 127.0.0.1, ::1 and the host of
// HTTP_ADDR). With TLS_CERT and TLS_KEY (PEM files) it serves https.
type Config struct {
	AMQPURL      string `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ; several nodes of a cluster comma-separated; amqps:// for TLS"`
	AMQPCAFile   string `envconfig:"AMQP_CA_FILE" desc:"PEM CA certificates trusted for amqps:// (empty: the system's roots)"`
	HTTPAddr     string `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080" desc:"the API, the page and /healthz"`
	MetricsAddr  string `envconfig:"METRICS_ADDR" default:":9103" desc:"/metrics and /healthz (not served on HTTP_ADDR); one address such as 10.0.1.5:9103 binds that interface only"`
	MetricsToken string `envconfig:"METRICS_TOKEN" desc:"when set, /metrics answers only Authorization: Bearer TOKEN (/healthz stays open)"`
	Token        string `envconfig:"ADMIN_TOKEN" desc:"bearer token for writes (and reads); admin refuses to start without one unless ADMIN_INSECURE"`
	ReadToken    string `envconfig:"ADMIN_READ_TOKEN" desc:"bearer token for reads only (weights, status, stats, records, history); empty: reads need ADMIN_TOKEN"`
	// Tokens and TokensFile list named operators (package operators).
	Tokens       string        `envconfig:"ADMIN_TOKENS" desc:"named operators, name:role:sha256-hex-of-token items (role read or write), comma-separated"`
	TokensFile   string        `envconfig:"ADMIN_TOKENS_FILE" desc:"file of name:role:sha256-hex items, one a line; read again when it changes"`
	Insecure     bool          `envconfig:"ADMIN_INSECURE" default:"false" desc:"true: anyone who reaches HTTP_ADDR may write (only on a loopback address of your own)"`
	AllowedHosts string        `envconfig:"ADMIN_ALLOWED_HOSTS" desc:"names clients may send as Host, comma-separated; others get 421 (empty: localhost, 127.0.0.1, ::1 and HTTP_ADDR's host)"`
	TLSCert      string        `envconfig:"TLS_CERT" desc:"PEM certificate: serve the API over https (with TLS_KEY)"`
	TLSKey       string        `envconfig:"TLS_KEY" desc:"PEM key for TLS_CERT"`
	ReadTimeout  time.Duration `envconfig:"HTTP_READ_TIMEOUT" default:"30s" desc:"to read a whole request"`
	WriteTimeout time.Duration `envconfig:"HTTP_WRITE_TIMEOUT" default:"6m" desc:"to write an answer (bounds ?wait)"`
	IdleTimeout  time.Duration `envconfig:"HTTP_IDLE_TIMEOUT" default:"2m" desc:"an idle keep-alive connection is closed after this"`
	Backends     string        `envconfig:"BACKENDS" default:"redis-a=127.0.0.1:6379,redis-b=127.0.0.1:6380" desc:"the starting Redis instances, name=host:port or name=redis://user:password@host:port/db or rediss://, until the control log has a table (admin seeds it with these)"`
	// BackendAllow: the hosts admin dials as backends and accepts in
	// add_backend (control.Allow); empty: the hosts of BACKENDS.
	BackendAllow string `envconfig:"BACKEND_ALLOW" desc:"addresses admin dials as backends and accepts in add_backend: host:port, CIDR:port, port * for any, or * (empty: the host:port pairs of BACKENDS)"`
	// RedisCAFile: PEM certificates trusted for rediss:// backends.
	RedisCAFile      string        `envconfig:"REDIS_CA_FILE" desc:"PEM certificates trusted for rediss:// backends (empty: the system's roots)"`
	RedisUsername    string        `envconfig:"REDIS_USERNAME" desc:"ACL user for every backend whose address names no password (admin needs read commands and INFO only)"`
	RedisPassword    string        `envconfig:"REDIS_PASSWORD" desc:"password for REDIS_USERNAME (or for the default user) on every backend whose address names none"`
	RedisCredentials string        `envconfig:"REDIS_CREDENTIALS" desc:"logins a backend may name as its credential: NAME=USER:PASSWORD, comma-separated"`
	Weights          string        `envconfig:"WEIGHTS" default:"redis-a=30,redis-b=70" desc:"the starting weights, name=weight (others get 1)"`
	RedisPrefix      string        `envconfig:"REDIS_PREFIX" default:"cp:" desc:"key prefix in Redis"`
	Retention        time.Duration `envconfig:"RETENTION" default:"5m" desc:"how long records stay readable"`
	ConsumerTimeout  time.Duration `envconfig:"CONSUMER_TIMEOUT" default:"5s" desc:"a consumer silent this long is dead and leaves the membership"`
	// CaptureMetricsURL lists the captures' /metrics (comma-separated),
	// scraped for status and the web page's capture panel; a host name
	// that resolves to several addresses (a scaled service) is every one
	// of them. Empty shows none.
	CaptureMetricsURL   string `envconfig:"CAPTURE_METRICS_URL" desc:"the captures' /metrics, comma-separated, for status and the page (a name resolving to several addresses is each of them)"`
	CaptureMetricsToken string `envconfig:"CAPTURE_METRICS_TOKEN" desc:"bearer token sent to CAPTURE_METRICS_URL (the captures' METRICS_TOKEN)"`
	// PrometheusURL: the page shows the alerts firing there and links to
	// PrometheusLinkURL (a browser's view of it; default PrometheusURL).
	PrometheusURL     string `envconfig:"PROMETHEUS_URL" desc:"Prometheus, whose firing alerts the page shows (read by admin, cached 10 s) and links to; empty: none"`
	PrometheusLinkURL string `envconfig:"PROMETHEUS_LINK_URL" desc:"Prometheus as a browser reaches it, for the page's link (empty: PROMETHEUS_URL)"`
	LogLevel          string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat         string `envconfig:"LOG_FORMAT" default:"auto" desc:"auto (text on a terminal, else json), text or json"`
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

// operators is the list of ADMIN_TOKEN, ADMIN_READ_TOKEN, ADMIN_TOKENS and
// ADMIN_TOKENS_FILE.
func (c Config) operators(log *slog.Logger) (*operators.List, error) {
	fixed := api.FixedOperators(c.Token, c.ReadToken)
	listed, err := operators.Parse(c.Tokens)
	if err != nil {
		return nil, fmt.Errorf("ADMIN_TOKENS: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return operators.New(append(fixed, listed...), strings.TrimSpace(c.TokensFile), log.With("component", "operators"))
}

// Validate checks the configuration and builds the initial routing table.
func (c Config) Validate() (*control.Table, error) {
	ops, err := c.operators(nil)
	if err != nil {
		return nil, err
	}
	if !ops.HasWriter() && !c.Insecure {
		return nil, errors.New("ADMIN_TOKEN is empty and ADMIN_TOKENS/ADMIN_TOKENS_FILE list no write operator: set a token for writes, or ADMIN_INSECURE=true to accept writes without one")
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
	if err := c.checkPrometheus(); err != nil {
		return nil, err
	}
	if c.MetricsAddr == "" {
		return nil, errors.New("METRICS_ADDR is empty")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HTTP_READ_TIMEOUT", c.ReadTimeout}, {"HTTP_WRITE_TIMEOUT", c.WriteTimeout}, {"HTTP_IDLE_TIMEOUT", c.IdleTimeout}} {
		if d.v <= 0 {
			return nil, fmt.Errorf("%s=%s: must be positive", d.name, d.v)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("TLS_CERT and TLS_KEY: set both (PEM certificate and key files) or neither")
	}
	if _, err := capturestats.ParseURLs(c.CaptureMetricsURL); err != nil {
		return nil, err
	}
	if c.AMQPURL != "" {
		if _, err := broker.Nodes(c.AMQPURL); err != nil {
			return nil, err
		}
	}
	if err := broker.UseCA(c.AMQPCAFile); err != nil {
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
	if _, err := c.allow(t); err != nil {
		return nil, err
	}
	return t, nil
}

// allow is BACKEND_ALLOW; a starting backend outside it is an error.
func (c Config) allow(t *control.Table) (*control.Allow, error) {
	a, err := control.ParseAllow(c.BackendAllow, t.Backends)
	if err != nil {
		return nil, err
	}
	for _, b := range t.Backends {
		if err := a.Check(b); err != nil {
			return nil, fmt.Errorf("BACKENDS: %w", err)
		}
	}
	return a, nil
}

// Server is a listening admin.
type Server struct {
	cfg      Config
	log      *slog.Logger
	http     *ops.Server // API, page, /healthz
	ops      *ops.Server // /metrics, /healthz
	tls      bool
	reader   *controllog.Reader
	listener *members.Listener
	pool     *redisconn.Pool
	queues   *queues.Prober
	members  *members.Set
	opers    *operators.List
	bound    chan struct{}
	once     sync.Once
}

// loadOperators is the operator list, with a warning for what is open.
func loadOperators(cfg Config, log *slog.Logger) (*operators.List, error) {
	opers, err := cfg.operators(log)
	if err != nil {
		return nil, err
	}
	if !opers.HasWriter() {
		log.Warn("ADMIN_INSECURE=true and no write operator: writes are accepted without a token", "addr", cfg.HTTPAddr)
		if opers.Len() == 0 {
			log.Warn("ADMIN_INSECURE=true and no operator: records and status are readable without a token", "addr", cfg.HTTPAddr)
		}
	}
	return opers, nil
}

// newPool is admin's Redis clients: its own login for the addresses of
// initial, a backend's named credential (from table, the one in force)
// where it names one; a sentinel backend's client dials only what allow
// allows.
func newPool(cfg Config, initial *control.Table, allow *control.Allow, table func() *control.Table) (*redisconn.Pool, error) {
	creds, err := redisconn.LoadCredentials(cfg.RedisCAFile, cfg.RedisUsername, cfg.RedisPassword, initial.Backends)
	if err != nil {
		return nil, err
	}
	if creds.Named, err = redisconn.ParseNamed(cfg.RedisCredentials); err != nil {
		return nil, err
	}
	creds.Allow = allow
	return &redisconn.Pool{New: func(addr string) *redis.Client {
		b := control.Backend{Name: addr, Addr: addr}
		for _, tb := range table().Backends {
			if tb.Addr == addr {
				b = tb
			}
		}
		o, err := redisconn.OptionsFor(b, creds)
		if err != nil {
			// The fold checked the address; should one still not parse,
			// every command on it fails with the reason.
			o = redisconn.ClientOptions{Options: &redis.Options{Dialer: func(context.Context, string, string) (net.Conn, error) { return nil, err }}}
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.MaxRetries = time.Second, 3*time.Second, 3*time.Second, 1
		return o.NewClient()
	}}, nil
}

// OperatorsPoll is how often ADMIN_TOKENS_FILE is checked for a change.
const OperatorsPoll = 2 * time.Second

// Listen builds admin and binds HTTP_ADDR; Serve runs it.
func Listen(cfg Config, log *slog.Logger) (*Server, error) {
	initial, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	allow, err := cfg.allow(initial)
	if err != nil {
		return nil, err
	}
	opers, err := loadOperators(cfg, log)
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS_CERT=%s, TLS_KEY=%s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
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
	s := &Server{cfg: cfg, log: log, bound: make(chan struct{}), opers: opers}
	s.reader = controllog.New(controllog.Config{URL: cfg.AMQPURL, Name: name, Initial: initial, Logger: log,
		Seed: true, SnapshotEvery: controllog.DefaultSnapshotEvery})
	s.members = members.New(cfg.ConsumerTimeout, time.Now)
	if s.pool, err = newPool(cfg, initial, allow, s.reader.Table); err != nil {
		return nil, err
	}

	reg := ops.NewRegistry()
	metrics := api.NewMetrics(reg, s.members.Alive,
		func() int64 { return s.reader.Table().Version }, s.reader.IsReady)
	s.listener = &members.Listener{
		URL: cfg.AMQPURL, Name: name + "/heartbeats", Set: s.members, Log: log.With("component", "heartbeats"),
		Counters: members.Counters{Received: metrics.HeartbeatOK, Refused: metrics.HeartbeatRefused},
		Bound:    func() { s.once.Do(func() { close(s.bound) }) },
	}
	health := func() error {
		if !s.reader.IsReady() {
			return fmt.Errorf("control log not read yet; rabbitmq %s", s.reader.Broker())
		}
		return nil
	}
	s.ops, err = ops.Listen(cfg.MetricsAddr, cfg.MetricsToken, reg, health)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR=%s: %w", cfg.MetricsAddr, err)
	}
	s.http, err = ops.ListenMux(cfg.HTTPAddr, ops.Timeouts{
		ReadHeader: min(10*time.Second, cfg.ReadTimeout), Read: cfg.ReadTimeout, Write: cfg.WriteTimeout, Idle: cfg.IdleTimeout,
	}, tlsConf)
	if err != nil {
		s.ops.Close()
		return nil, fmt.Errorf("HTTP_ADDR=%s: %w", cfg.HTTPAddr, err)
	}
	s.tls = tlsConf != nil
	s.http.HandleHealth(health)
	hosts := api.DefaultHosts(cfg.HTTPAddr)
	if strings.TrimSpace(cfg.AllowedHosts) != "" {
		hosts = strings.Split(cfg.AllowedHosts, ",")
	}
	s.http.Wrap = api.NewGuard(hosts, s.tls).Wrap
	layout := store.Layout{Prefix: cfg.RedisPrefix, Retention: cfg.Retention}
	s.queues = &queues.Prober{URL: cfg.AMQPURL, Name: name + "/queues"}
	apiCfg := api.Config{
		Operators: opers, History: s.reader.History,
		MaxWait: maxWait(cfg.WriteTimeout), Control: s.reader, Members: s.members, Allow: allow,
		Records: &readback.Searcher{Layout: layout, Client: s.pool.Cmdable},
		Redis:   s.pool.Cmdable,
		Tally: tally.New(tally.Config{Layout: layout, Log: log.With("component", "tally"),
			Client: s.pool.Cmdable}),
		Queues:  s.queues,
		Metrics: metrics, Log: log,
	}
	if urls, _ := capturestats.ParseURLs(cfg.CaptureMetricsURL); len(urls) > 0 {
		apiCfg.Capture = &capturestats.Set{URLs: urls, Token: cfg.CaptureMetricsToken}
	}
	ap := api.New(apiCfg)
	ap.Register(s.http.Mux)
	ap.RegisterAlerts(s.http.Mux, prometheusAlerts(cfg, reg))
	web.Register(s.http.Mux)
	return s, nil
}

// Addr is the bound HTTP address.
func (s *Server) Addr() string { return s.http.Addr() }

// URL is the API's base URL, http or https.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// MetricsAddr is the bound address of /metrics.
func (s *Server) MetricsAddr() string { return s.ops.Addr() }

// Ready is closed once the control log has been read.
func (s *Server) Ready() <-chan struct{} { return s.reader.Ready() }

// Brokers is the state of admin's broker sessions: the control log's and
// the heartbeat listener's.
func (s *Server) Brokers() (control, heartbeats broker.Status) {
	return s.reader.Broker(), s.listener.Broker()
}

// HeartbeatsBound is closed once the heartbeat queue is first consuming.
func (s *Server) HeartbeatsBound() <-chan struct{} { return s.bound }

// Serve runs until ctx ends or the HTTP server fails.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.pool.Close()
	defer s.queues.Close()
	s.log.Info("admin serving", "addr", s.URL(), "metrics", s.MetricsAddr(), "amqp", broker.Redact(s.cfg.AMQPURL), "weights", s.reader.Table().String())
	var wg sync.WaitGroup
	watch := func(ctx context.Context) error { s.opers.Watch(ctx, OperatorsPoll); return nil }
	for _, run := range []func(context.Context) error{s.reader.Run, s.listener.Run, s.ops.Serve, watch} {
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

// maxWait bounds ?wait so that the answer still fits in the write
// timeout: 10 s less, or half of a short one.
func maxWait(write time.Duration) time.Duration {
	if w := write - 10*time.Second; w >= 10*time.Second {
		return w
	}
	return write / 2
}

var redisLogOnce sync.Once

// redisLog sends go-redis's internal messages to slog at Debug.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
