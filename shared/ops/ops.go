// Package ops serves a service's operational endpoints, /healthz and the
// Prometheus /metrics, and holds what every HTTP server of the project
// shares: the timeouts, and optional TLS.
package ops

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Timeouts bound how long a connection may hold a server's resources. Each
// is an http.Server field of the same name; zero leaves it unbounded, so
// every server of the project sets all four.
type Timeouts struct {
	ReadHeader time.Duration // request line and headers
	Read       time.Duration // the whole request, body included
	Write      time.Duration // from the end of the headers to the end of the answer
	Idle       time.Duration // an idle keep-alive connection is closed after this
}

// DefaultTimeouts suit /healthz and /metrics: small requests, quick answers.
var DefaultTimeouts = Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: time.Minute}

// Check reports a zero or negative timeout.
func (t Timeouts) Check() error {
	if t.ReadHeader <= 0 || t.Read <= 0 || t.Write <= 0 || t.Idle <= 0 {
		return errors.New("every HTTP timeout must be positive")
	}
	return nil
}

// Server serves the handlers added to Mux (for Listen: /healthz and
// /metrics, plus any others).
type Server struct {
	Mux *http.ServeMux
	// Wrap, when set before Serve, wraps Mux (for checks that apply to
	// every route).
	Wrap func(http.Handler) http.Handler
	ln   net.Listener
	srv  *http.Server
	tls  bool
}

// Listen binds addr (METRICS_ADDR: one address such as 10.0.1.5:9100, or
// "127.0.0.1:0" in tests; Addr tells the port) and serves /healthz and
// /metrics with DefaultTimeouts. When token (METRICS_TOKEN) is not empty,
// /metrics answers only a request that carries "Authorization: Bearer
// token"; /healthz stays open for health checks. health returns nil while
// the service is healthy; its error text is the body of a 503 otherwise.
//
// A host name in addr binds the one address of this host that the name
// resolves to: in compose, a network alias of the service on one network
// binds /metrics to that network only, each replica to its own address.
func Listen(addr, token string, reg *prometheus.Registry, health func() error) (*Server, error) {
	bind, err := LocalAddr(addr)
	if err != nil {
		return nil, err
	}
	s, err := ListenMux(bind, DefaultTimeouts, nil)
	if err != nil {
		return nil, err
	}
	s.Mux.Handle("GET /metrics", Bearer(token, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	s.HandleHealth(health)
	return s, nil
}

// LocalAddr is addr with a host name replaced by the first address it
// resolves to that belongs to this host; an IP or an empty host is kept.
func LocalAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || net.ParseIP(host) != nil {
		return addr, nil // net.Listen tells what is wrong
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("listen on %s: this host's addresses: %w", addr, err)
	}
	for _, ip := range ips {
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip.IP) {
				return net.JoinHostPort(ip.IP.String(), port), nil
			}
		}
	}
	return "", fmt.Errorf("listen on %s: %s resolves to %v, none of them an address of this host", addr, host, ips)
}

// Bearer wraps h so that it answers only requests that carry
// "Authorization: Bearer token" (compared in constant time); others get
// 401. An empty token leaves h open.
func Bearer(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "metrics need a bearer token (METRICS_TOKEN)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ListenMux binds addr for a server of the caller's own routes, with the
// timeouts t and, when tlsConf is not nil, TLS.
func ListenMux(addr string, t Timeouts, tlsConf *tls.Config) (*Server, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, WriteTimeout: t.Write, IdleTimeout: t.Idle,
		TLSConfig: tlsConf,
	}
	return &Server{Mux: mux, ln: ln, srv: srv, tls: tlsConf != nil}, nil
}

// HandleHealth serves GET /healthz from health.
func (s *Server) HandleHealth(health func() error) {
	s.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}

// Close releases a server that will not be served.
func (s *Server) Close() error { return s.ln.Close() }

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is cancelled, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	if s.Wrap != nil {
		s.srv.Handler = s.Wrap(s.Mux)
	}
	errc := make(chan error, 1)
	go func() {
		if s.tls {
			errc <- s.srv.ServeTLS(s.ln, "", "")
			return
		}
		errc <- s.srv.Serve(s.ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return reg
}
