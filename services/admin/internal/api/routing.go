package api

// Routing changes beyond weights: backends added and removed at runtime,
// and the routing mode. Each is one control message appended to the log
// and answered by the fold's verdict, like PUT /api/v1/weights; each takes
// If-Match and ?wait the same way and answers with the same body.
//
//	POST   /api/v1/backends          {"name":"redis-c","addr":"127.0.0.1:6381","weight":50,"credential":"pool-b"}
//	DELETE /api/v1/backends/{name}
//	PUT    /api/v1/mode              {"mode":"hash","hash_key":"src","sticky":true}
//	GET    /api/v1/modes             the routing modes and hash keys, defaults first

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/routing"
)

// registerRouting adds the routing endpoints to mux.
func (a *API) registerRouting(mux *http.ServeMux) {
	for _, r := range []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"POST /api/v1/backends", a.addBackend},
		{"DELETE /api/v1/backends/{name}", a.removeBackend},
		{"PUT /api/v1/mode", a.putMode},
		// The lists of modes and keys tell nothing about the system: no
		// token is needed to read them.
		{"GET /api/v1/modes", a.modes},
	} {
		mux.Handle(r.pattern, a.cfg.Metrics.instrument(r.pattern, r.h))
	}
}

// decodeStrict decodes a JSON body into v, refusing unknown fields.
func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %v", err)
	}
	if dec.More() {
		return errors.New("body: trailing data after the JSON object")
	}
	return nil
}

func (a *API) addBackend(w http.ResponseWriter, r *http.Request) {
	by, ok := a.authorize(w, r)
	if !ok {
		return
	}
	var req apitypes.BackendRequest
	if err := decodeStrict(r, &req); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if control.HasPassword(req.Addr) {
		// The control log is read by every consumer and kept: no password
		// goes into it.
		fail(w, http.StatusBadRequest, "add backend %s: the address carries a password, which would be stored in clear in the control log: "+
			"give each consumer and admin the login as REDIS_CREDENTIALS=NAME=USER:PASSWORD and send \"credential\":\"NAME\" "+
			"(admin backends add %s %s --credential NAME)", req.Name, req.Name, redact.Addr(req.Addr))
		return
	}
	b := control.Backend{Name: req.Name, Addr: req.Addr, Weight: 1, Credential: req.Credential}
	if req.Weight != nil {
		b.Weight = *req.Weight
	}
	if err := control.CheckAddr(b.Addr); err == nil {
		if err := a.cfg.Allow.Check(b); err != nil {
			// Consumers with the same list would refuse it too; nothing is
			// published.
			fail(w, http.StatusBadRequest, "add backend: %v", err)
			return
		}
	}
	a.change(w, r, by, "add backend", control.Message{Op: control.OpAddBackend, Backend: &b})
}

func (a *API) removeBackend(w http.ResponseWriter, r *http.Request) {
	by, ok := a.authorize(w, r)
	if !ok {
		return
	}
	a.change(w, r, by, "remove backend", control.Message{Op: control.OpRemoveBackend, Name: r.PathValue("name")})
}

// modes answers the tables of routing modes and hash keys.
func (a *API) modes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, apitypes.Modes{Modes: control.Modes(), HashKeys: control.HashKeys()})
}

func (a *API) putMode(w http.ResponseWriter, r *http.Request) {
	by, ok := a.authorize(w, r)
	if !ok {
		return
	}
	var req apitypes.ModeRequest
	if err := decodeStrict(r, &req); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.change(w, r, by, "set mode", control.Message{Op: control.OpSetMode, Mode: req.Mode, HashKey: req.HashKey, Sticky: req.Sticky})
}

// change checks m against the table in force, publishes it with the
// If-Match version, answers with the fold's verdict and, with ?wait, waits
// for every live consumer to apply it. The caller has authorized r. A
// version the caller read from the body (m.ExpectVersion) must agree with
// If-Match when both are given.
func (a *API) change(w http.ResponseWriter, r *http.Request, by, what string, m control.Message) {
	ifMatch, err := parseIfMatch(r.Header.Get("If-Match"))
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	expect := m.ExpectVersion
	if ifMatch != nil {
		if expect != nil && *expect != *ifMatch {
			fail(w, http.StatusBadRequest, "If-Match %d and expect_version %d disagree", *ifMatch, *expect)
			return
		}
		expect = ifMatch
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		wait, err = time.ParseDuration(s)
		if err != nil || wait < 0 || wait > a.cfg.MaxWait {
			fail(w, http.StatusBadRequest, "wait=%q: want a duration from 0s to %s", s, a.cfg.MaxWait)
			return
		}
	}
	if !a.cfg.Control.IsReady() {
		fail(w, http.StatusServiceUnavailable, "control log not read yet (is rabbitmq reachable?)")
		return
	}
	cur := a.cfg.Control.Table()
	if expect != nil && *expect < cur.Version {
		a.stale(w, fmt.Errorf("%w: expected version %d, table is at %d", control.ErrStaleVersion, *expect, cur.Version), cur)
		return
	}
	// The local check gives a clear answer without publishing a change
	// that would be refused; the fold's verdict below is the authority. It
	// leaves out the expected version: one ahead of the table is the fold's
	// to refuse (409), and one behind was answered just above.
	m.ExpectVersion = nil
	body, _ := json.Marshal(m)
	if _, res := control.Apply(cur, cur.Position, body); res.Err != nil {
		fail(w, http.StatusBadRequest, "%s: %v", what, res.Err)
		return
	}
	// by is the authenticated operator, never a field of the request.
	m.ExpectVersion, m.ID, m.By = expect, newID(), by
	pctx, cancel := context.WithTimeout(r.Context(), a.cfg.PublishTimeout)
	res, t, err := a.cfg.Control.Publish(pctx, m)
	cancel()
	if err != nil {
		a.cfg.Metrics.published("failed")
		a.cfg.Log.Warn("publish control change", "id", m.ID, "op", m.Op, "err", err)
		fail(w, http.StatusServiceUnavailable, "control log: %v", err)
		return
	}
	if res.Err != nil {
		a.cfg.Metrics.published("refused")
		if errors.Is(res.Err, control.ErrStaleVersion) {
			a.stale(w, res.Err, t)
			return
		}
		fail(w, http.StatusBadRequest, "%s: %v", what, res.Err)
		return
	}
	a.cfg.Metrics.published("applied")
	a.cfg.Log.Info("routing changed", "id", m.ID, "by", m.By, "op", m.Op, "version", t.Version, "position", res.Position, "table", t.Describe())

	pending := a.cfg.Members.Behind(res.Position)
	if wait > 0 && len(pending) > 0 {
		wctx, cancel := context.WithTimeout(r.Context(), wait)
		pending = a.cfg.Members.Wait(wctx, res.Position, a.cfg.WaitPoll)
		cancel()
	}
	w.Header().Set("ETag", etag(t.Version))
	writeJSON(w, http.StatusOK, apitypes.WeightsResponse{
		Table: *t.Redacted(), ChangePosition: res.Position, ID: m.ID,
		Converged: len(pending) == 0, Pending: nonNil(pending), ConsumersAlive: a.cfg.Members.Alive(),
	})
}

// keyOwner is the backend that owns the key a records query names, when
// the table routes by a hash and the query names every field the hash key
// hashes (control.HashKeys: src for "src", dst for "dst", both for "pair";
// a query has no ports, so never "flow"): the stick table's entry when
// sticky, else the mode's choice. ok is false when every backend must be
// asked.
func (a *API) keyOwner(ctx context.Context, t *control.Table, q readback.Query) (owner control.Backend, ok bool) {
	if q.Key != "" {
		return a.recordKeyOwner(ctx, t, q.Key)
	}
	if !t.RoutingMode().Info().Hashed {
		return owner, false
	}
	fields := t.Key().Info().Fields
	if fields&control.FieldPorts != 0 {
		return owner, false
	}
	var r record.Record
	var err error
	if fields&control.FieldSrc != 0 {
		if r.Src, err = netip.ParseAddr(q.Src); err != nil {
			return owner, false // the key is not in the query
		}
	}
	if fields&control.FieldDst != 0 {
		if r.Dst, err = netip.ParseAddr(q.Dst); err != nil {
			return owner, false
		}
	}
	keyFn, err := routing.KeyFor(t.Key())
	if err != nil {
		return owner, false
	}
	return a.hashOwner(ctx, t, keyFn(&r))
}
