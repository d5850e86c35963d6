package api

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/redact"
)

// history answers the control log's messages, oldest first, since ?since
// (a duration back from now, an RFC 3339 time or Unix seconds; default:
// all that admin holds).
func (a *API) history(w http.ResponseWriter, r *http.Request) {
	if a.cfg.History == nil {
		fail(w, http.StatusNotFound, "history is not kept by this server")
		return
	}
	since, err := readback.ParseTime("since", r.URL.Query().Get("since"), a.cfg.Now(), time.Time{})
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	out := apitypes.History{Entries: []apitypes.HistoryEntry{}}
	for _, e := range a.cfg.History(since) {
		m := e.Message
		out.Entries = append(out.Entries, apitypes.HistoryEntry{Entry: e, By: m.By, ID: m.ID, Op: m.Op, What: Describe(m)})
	}
	writeJSON(w, http.StatusOK, out)
}

// Describe says what a control message asks for, addresses redacted.
func Describe(m control.Message) string {
	switch m.Op {
	case control.OpSetWeights:
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(m.Weights)) {
			parts = append(parts, fmt.Sprintf("%s=%d", name, m.Weights[name]))
		}
		return "weights " + strings.Join(parts, " ")
	case control.OpAddBackend:
		if m.Backend == nil {
			return "add backend (none given)"
		}
		return fmt.Sprintf("add backend %s at %s, weight %d", m.Backend.Name, redact.Addr(m.Backend.Addr), m.Backend.Weight)
	case control.OpRemoveBackend:
		return "remove backend " + m.Name
	case control.OpSetMode:
		s := "mode"
		if m.Mode != "" {
			s += " " + m.Mode.String()
		}
		if m.HashKey != "" {
			s += " on " + m.HashKey.String()
		}
		if m.Sticky != nil {
			s += fmt.Sprintf(", sticky %v", *m.Sticky)
		}
		return s
	case control.OpSeed:
		if m.Table != nil {
			return "seed " + m.Table.Redacted().Describe()
		}
	}
	return m.Op
}
