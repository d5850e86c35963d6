package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redact"
)

func (a *API) records(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := a.cfg.Now()
	var (
		rq  readback.Query
		err error
	)
	bad := func(err error) { fail(w, http.StatusBadRequest, "%v", err) }
	if rq.Since, err = readback.ParseTime("since", q.Get("since"), now, now.Add(-DefaultSince)); err != nil {
		bad(err)
		return
	}
	if rq.Until, err = readback.ParseTime("until", q.Get("until"), now, now.Add(ClockSkew)); err != nil {
		bad(err)
		return
	}
	if rq.Src, err = readback.ParseIP("src", q.Get("src")); err != nil {
		bad(err)
		return
	}
	if rq.Dst, err = readback.ParseIP("dst", q.Get("dst")); err != nil {
		bad(err)
		return
	}
	if rq.Key, err = readback.ParseKey("key", q.Get("key")); err != nil {
		bad(err)
		return
	}
	if s := q.Get("limit"); s != "" {
		if rq.Limit, err = strconv.Atoi(s); err != nil || rq.Limit <= 0 {
			fail(w, http.StatusBadRequest, "limit %q: want a positive integer", s)
			return
		}
		if rq.Limit > readback.MaxLimit {
			fail(w, http.StatusBadRequest, "limit %d is over the cap of %d records: narrow the window or filter by src, dst or key", rq.Limit, readback.MaxLimit)
			return
		}
	}
	// The table as consumers with the same BACKEND_ALLOW route by it: the
	// same stick home and ring, and no backend admin may not dial.
	t, _ := a.cfg.Allow.Filter(a.cfg.Control.Table())
	asked := t.Backends
	owner, byKey := a.keyOwner(r.Context(), t, rq)
	if byKey && q.Get("all") != "true" {
		asked = []control.Backend{owner}
	} else {
		byKey = false
	}
	if q.Get("count") == "true" {
		a.count(w, r, rq, t.Backends, asked, owner, byKey)
		return
	}
	res, err := a.cfg.Records.Search(r.Context(), asked, rq)
	if err == nil && byKey && len(res.Errors) > 0 {
		// The owner cannot be read: what it stored is out of reach, but
		// records routed elsewhere while it was down may still be found.
		asked, byKey = t.Backends, false
		res, err = a.cfg.Records.Search(r.Context(), asked, rq)
	}
	if err != nil {
		if errors.Is(err, readback.ErrBadQuery) {
			bad(err)
		} else {
			fail(w, http.StatusInternalServerError, "%v", err)
		}
		return
	}
	out := apitypes.RecordsResponse{CountByBackend: res.CountByBackend, Truncated: res.Truncated, Errors: res.Errors, BytesFetched: res.Fetched}
	if byKey {
		out.Owner = owner.Name
	}
	out.From, out.To = a.cfg.Records.Window(rq)
	code, why := answerCode(res.Errors, asked)
	out.Error = why
	writeRecords(w, code, out, res.Items)
}

// answerCode is the status of a records answer: 503, and why, when no
// backend asked could be read; else 200.
func answerCode(errs map[string]string, asked []control.Backend) (int, string) {
	if len(errs) > 0 && len(errs) == len(asked) {
		return http.StatusServiceUnavailable, "no backend could be read"
	}
	return http.StatusOK, ""
}

// count answers a records question with counts: from the owner alone when
// byKey (falling back to every backend when it cannot be read), else from
// asked.
func (a *API) count(w http.ResponseWriter, r *http.Request, rq readback.Query, all, asked []control.Backend, owner control.Backend, byKey bool) {
	res, err := a.cfg.Records.Count(r.Context(), asked, rq)
	if err == nil && byKey && len(res.Errors) > 0 {
		asked, byKey = all, false
		res, err = a.cfg.Records.Count(r.Context(), asked, rq)
	}
	if err != nil {
		if errors.Is(err, readback.ErrBadQuery) {
			fail(w, http.StatusBadRequest, "%v", err)
		} else {
			fail(w, http.StatusInternalServerError, "%v", err)
		}
		return
	}
	out := apitypes.CountResponse{CountByBackend: res.ByBackend, Total: res.Total, Source: "scan",
		BytesFetched: res.Fetched, Errors: res.Errors}
	if res.FromCounters {
		out.Source = "counters"
	}
	if byKey {
		out.Owner = owner.Name
	}
	out.From, out.To = a.cfg.Records.Window(rq)
	code, why := answerCode(res.Errors, asked)
	out.Error = why
	writeJSON(w, code, out)
}

// writeRecords writes out with items as its records, one record at a time,
// so a large answer is never built whole in memory.
func writeRecords(w http.ResponseWriter, code int, out apitypes.RecordsResponse, items []readback.Item) {
	// The fields other than records, encoded alone: {"count_by_backend":…}.
	rest, err := json.Marshal(out)
	if err != nil {
		fail(w, http.StatusInternalServerError, "encode answer: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.WriteString(`{"records":[`)
	enc := json.NewEncoder(bw)
	for i := range items {
		if i > 0 {
			bw.WriteByte(',')
		}
		// Encode appends a newline, which JSON allows between values.
		if enc.Encode(apitypes.RecordItem{Backend: items[i].Backend, JSON: record.ToJSON(&items[i].Record)}) != nil {
			return
		}
	}
	bw.WriteString("],")
	bw.WriteString(redact.Text(string(rest[1:]))) // rest without its opening brace
	bw.WriteByte('\n')
	_ = bw.Flush()
}
