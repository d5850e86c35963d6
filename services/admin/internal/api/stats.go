package api

import (
	"net/http"

	"github.com/connpipe/connpipe/services/admin/internal/tally"
	"github.com/connpipe/connpipe/shared/redact"
)

// Stats is the answer of GET /api/v1/stats.
type Stats struct {
	Version int64 `json:"version"` // table version the instances are listed from
	tally.Snapshot
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Tally == nil {
		fail(w, http.StatusNotFound, "stats are not kept by this server")
		return
	}
	t := a.cfg.Control.Table()
	snap := a.cfg.Tally.Snapshot(r.Context(), a.reachable(t.Backends))
	bs := make([]tally.Instance, len(snap.Backends))
	for i, in := range snap.Backends {
		in.Addr = redact.Addr(in.Addr)
		bs[i] = in
	}
	snap.Backends = bs // the tally's own slice is shared with other callers
	writeJSON(w, http.StatusOK, Stats{Version: t.Version, Snapshot: snap})
}
