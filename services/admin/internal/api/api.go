package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/services/admin/internal/members"
	"github.com/connpipe/connpipe/services/admin/internal/operators"
	"github.com/connpipe/connpipe/services/admin/internal/queues"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/services/admin/internal/tally"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/redact"
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
	MaxWait               = apitypes.MaxWait
	DefaultSince          = time.Minute
	ClockSkew             = 5 * time.Second
	maxBody               = 64 << 10
	backendTimeout        = 500 * time.Millisecond
)

// Config wires the API to the rest of admin.
type Config struct {
	// Operators may read (role read) or read and write (role write). With
	// no operator that may write when the API is made, writes need no
	// token (app refuses that unless ADMIN_INSECURE=true); with none at
	// all, reads are open too. nil: the list of Token and ReadToken.
	Operators *operators.List
	// Token and ReadToken, when Operators is nil, are its only operators:
	// "admin" who writes, "reader" who reads.
	Token, ReadToken string
	Control          Control
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
	// History gives the control log's messages published since a time
	// (controllog.Reader.History); nil answers 404 on /api/v1/history.
	History func(since time.Time) []controllog.Entry
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
type API struct {
	cfg                   Config
	openWrites, openReads bool // no operator may write / none at all
}

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
	if cfg.Operators == nil {
		cfg.Operators, _ = operators.New(FixedOperators(cfg.Token, cfg.ReadToken), "", cfg.Log)
	}
	// Decided once: an operators file edited to list no writer later
	// closes writes rather than opening them.
	return &API{cfg: cfg, openWrites: !cfg.Operators.HasWriter(), openReads: cfg.Operators.Len() == 0}
}

// FixedOperators are the operators of ADMIN_TOKEN ("admin", write) and
// ADMIN_READ_TOKEN ("reader", read), those set.
func FixedOperators(token, readToken string) []operators.Operator {
	var out []operators.Operator
	if token = strings.TrimSpace(token); token != "" {
		out = append(out, operators.FromToken(operators.AdminName, operators.RoleWrite, token))
	}
	if readToken = strings.TrimSpace(readToken); readToken != "" {
		out = append(out, operators.FromToken(operators.ReaderName, operators.RoleRead, readToken))
	}
	return out
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
		{"GET /api/v1/history", a.reads(a.history)},
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
	_, _ = w.Write(append([]byte(redact.Text(string(b))), '\n'))
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

// authorize answers 401/403 and returns false unless r may write; by is
// the name of the operator whose token r carries, for the change's "by".
func (a *API) authorize(w http.ResponseWriter, r *http.Request) (by string, ok bool) {
	if a.openWrites {
		return "anonymous", true
	}
	op, ok := a.check(w, r, "ADMIN_TOKEN")
	if !ok {
		return "", false
	}
	if op.Role != operators.RoleWrite {
		fail(w, http.StatusForbidden, "operator %s may only read", op.Name)
		return "", false
	}
	return op.Name, true
}

// reads lets h answer only a request that may read: one with the token of
// any operator.
func (a *API) reads(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.openReads {
			h(w, r)
			return
		}
		if _, ok := a.check(w, r, "ADMIN_READ_TOKEN"); ok {
			h(w, r)
		}
	}
}

// check answers 401 without a bearer token and 403 with one that is no
// operator's, naming the variable that holds the token wanted.
func (a *API) check(w http.ResponseWriter, r *http.Request, variable string) (operators.Operator, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="connpipe-admin"`)
		fail(w, http.StatusUnauthorized, "missing token: send Authorization: Bearer $%s", variable)
		return operators.Operator{}, false
	}
	op, ok := a.cfg.Operators.Lookup(tok)
	if !ok {
		fail(w, http.StatusForbidden, "wrong token")
		return operators.Operator{}, false
	}
	return op, true
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
func decodeWeights(r *http.Request) (apitypes.WeightsRequest, error) {
	var raw struct {
		Weights       map[string]json.RawMessage `json:"weights"`
		ExpectVersion *int64                     `json:"expect_version"`
	}
	var req apitypes.WeightsRequest
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
	by, ok := a.authorize(w, r)
	if !ok {
		return
	}
	req, err := decodeWeights(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.change(w, r, by, "weights", control.Message{Op: control.OpSetWeights, Weights: req.Weights, ExpectVersion: req.ExpectVersion})
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
