package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/services/admin/internal/members"
	"github.com/connpipe/connpipe/services/admin/internal/queues"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/services/admin/internal/tally"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/redis/go-redis/v9"
)

// Control is the control log as the API uses it (a *controllog.Reader).
type Control interface {
	Table() *control.Table
	IsReady() bool
	Broker() broker.Status // the control log's broker session
	Publish(ctx context.Context, m control.Message) (control.Result, *control.Table, error)
}

// Limits and defaults.
const (
	DefaultPublishTimeout = 10 * time.Second
	MaxWait               = 5 * time.Minute
	DefaultSince          = time.Minute
	ClockSkew             = 5 * time.Second
	maxBody               = 64 << 10
	backendTimeout        = 500 * time.Millisecond
)

// Config wires the API to the rest of admin.
type Config struct {
	// Token guards writes. Empty means writes need no token; app refuses
	// that unless ADMIN_INSECURE=true.
	Token string
	// ReadToken guards reads of the weights, status, stats and records;
	// Token is accepted for them too. With both empty reads are open.
	ReadToken string
	Control   Control
	// Allow is BACKEND_ALLOW: admin neither dials a backend outside it (for
	// status, stats or records) nor publishes an add_backend to one. nil
	// allows every host.
	Allow   *control.Allow
	Members *members.Set
	Records *readback.Searcher
	// Redis gives the client for a backend address (for PING and INFO).
	Redis func(addr string) redis.Cmdable
	// Tally counts stored records per instance and second (GET
	// /api/v1/stats); nil answers 404 there.
	Tally *tally.Tally
	// Queues reads the records queues' depths; Capture scrapes a capture's
	// metrics. Either may be nil: status then shows null.
	Queues         Queues
	Capture        CaptureStats
	Metrics        *Metrics
	Log            *slog.Logger
	Now            func() time.Time
	PublishTimeout time.Duration // default DefaultPublishTimeout
	// MaxWait bounds ?wait on a change (default and at most MaxWait); keep
	// it under the server's write timeout, or the answer cannot be sent.
	MaxWait  time.Duration
	WaitPoll time.Duration // how often ?wait re-checks expiry; default 250ms
}

// Queues reads the depth of the records queues (a *queues.Prober).
type Queues interface {
	Depths(ctx context.Context) (queues.Depths, error)
}

// CaptureStats reads every capture's counters (a *capturestats.Set).
type CaptureStats interface {
	Stats(ctx context.Context) []capturestats.Target
}

// API serves the HTTP endpoints.
type API struct{ cfg Config }

// New returns the API; Register adds its routes to a mux.
func New(cfg Config) *API {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.MaxWait <= 0 || cfg.MaxWait > MaxWait {
		cfg.MaxWait = MaxWait
	}
	if cfg.WaitPoll == 0 {
		cfg.WaitPoll = 250 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &API{cfg: cfg}
}

// Register adds the API routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	for _, r := range []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /api/v1/weights", a.reads(a.getWeights)},
		{"PUT /api/v1/weights", a.putWeights},
		{"GET /api/v1/status", a.reads(a.status)},
		{"GET /api/v1/records", a.reads(a.records)},
		{"GET /api/v1/stats", a.reads(a.stats)},
	} {
		mux.Handle(r.pattern, a.cfg.Metrics.instrument(r.pattern, r.h))
	}
	a.registerRouting(mux)
}

// apiError is the body of every error answer.
type apiError struct {
	Error   string `json:"error"`
	Version *int64 `json:"version,omitempty"` // the version in force, on 409
}

// writeJSON answers v. Whatever an answer quotes (an address, a library's
// error), no URL password in it leaves: fields are redacted where they are
// made, and the encoded answer once more here.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append([]byte(control.RedactText(string(b))), '\n'))
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

// reachable is bs less the backends BACKEND_ALLOW leaves out.
func (a *API) reachable(bs []control.Backend) []control.Backend {
	out := make([]control.Backend, 0, len(bs))
	for _, b := range bs {
		if a.cfg.Allow.Check(b) == nil {
			out = append(out, b)
		}
	}
	return out
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

func (a *API) getWeights(w http.ResponseWriter, r *http.Request) {
	if !a.cfg.Control.IsReady() {
		fail(w, http.StatusServiceUnavailable, "control log not read yet (is rabbitmq reachable?)")
		return
	}
	t := a.cfg.Control.Table()
	w.Header().Set("ETag", etag(t.Version))
	writeJSON(w, http.StatusOK, t.Redacted())
}

// WeightsRequest is the body of PUT /api/v1/weights.
type WeightsRequest struct {
	Weights       map[string]int `json:"weights"`
	ExpectVersion *int64         `json:"expect_version,omitempty"`
}

// WeightsResponse is the answer to a change that applied.
type WeightsResponse struct {
	control.Table
	ChangePosition int64    `json:"change_position"`
	ID             string   `json:"id"`
	Converged      bool     `json:"converged"`
	Pending        []string `json:"pending"`
	ConsumersAlive int      `json:"consumers_alive"`
}

// authorize answers 401/403 and returns false unless r may write.
func (a *API) authorize(w http.ResponseWriter, r *http.Request) bool {
	if a.cfg.Token == "" {
		return true
	}
	return a.check(w, r, "ADMIN_TOKEN", a.cfg.Token)
}

// reads lets h answer only a request that may read: one with the read
// token or the write token.
func (a *API) reads(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Token == "" && a.cfg.ReadToken == "" {
			h(w, r)
			return
		}
		if a.check(w, r, "ADMIN_READ_TOKEN", a.cfg.ReadToken, a.cfg.Token) {
			h(w, r)
		}
	}
}

// check answers 401 without a bearer token and 403 with one that is none
// of tokens (empty ones never match), naming the variable that holds the
// token wanted.
func (a *API) check(w http.ResponseWriter, r *http.Request, variable string, tokens ...string) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="connpipe-admin"`)
		fail(w, http.StatusUnauthorized, "missing token: send Authorization: Bearer $%s", variable)
		return false
	}
	match := 0
	for _, want := range tokens {
		if want != "" {
			match |= subtle.ConstantTimeCompare([]byte(tok), []byte(want))
		}
	}
	if match != 1 {
		fail(w, http.StatusForbidden, "wrong token")
		return false
	}
	return true
}

// parseIfMatch reads If-Match: "N" (or W/"N", or N). "*" and absent give nil.
func parseIfMatch(h string) (*int64, error) {
	h = strings.TrimSpace(h)
	if h == "" || h == "*" {
		return nil, nil
	}
	v := strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("If-Match %q: want a table version such as \"3\"", h)
	}
	return &n, nil
}

// decodeWeights reads and checks the shape of a PUT body.
func decodeWeights(r *http.Request) (WeightsRequest, error) {
	var raw struct {
		Weights       map[string]json.RawMessage `json:"weights"`
		ExpectVersion *int64                     `json:"expect_version"`
	}
	var req WeightsRequest
	if err := decodeStrict(r, &raw); err != nil {
		return req, err
	}
	if len(raw.Weights) == 0 {
		return req, errors.New(`body: "weights" is missing or empty: want {"weights":{"redis-a":30}}`)
	}
	if raw.ExpectVersion != nil && *raw.ExpectVersion < 0 {
		return req, fmt.Errorf("body: expect_version %d is negative", *raw.ExpectVersion)
	}
	req.ExpectVersion = raw.ExpectVersion
	req.Weights = make(map[string]int, len(raw.Weights))
	for name, v := range raw.Weights {
		var n int
		if err := json.Unmarshal(v, &n); err != nil {
			return req, fmt.Errorf("body: weights[%q]: %s: weight must be an integer 0..%d", name, v, control.MaxWeight)
		}
		req.Weights[name] = n
	}
	return req, nil
}

func (a *API) putWeights(w http.ResponseWriter, r *http.Request) {
	if !a.authorize(w, r) {
		return
	}
	req, err := decodeWeights(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.change(w, r, "weights", control.Message{Op: control.OpSetWeights, Weights: req.Weights, ExpectVersion: req.ExpectVersion})
}

func (a *API) stale(w http.ResponseWriter, err error, t *control.Table) {
	body := apiError{Error: err.Error()}
	if t != nil {
		v := t.Version
		body.Version = &v
		w.Header().Set("ETag", etag(v))
	}
	writeJSON(w, http.StatusConflict, body)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "admin-" + hex.EncodeToString(b[:])
}
