package api

import (
	"net/http"

	"github.com/connpipe/connpipe/services/admin/internal/tally"
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
	writeJSON(w, http.StatusOK, Stats{Version: t.Version, Snapshot: a.cfg.Tally.Snapshot(r.Context(), t.Backends)})
}
