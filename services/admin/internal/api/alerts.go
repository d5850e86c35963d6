package api

import (
	"context"
	"net/http"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/alerts"
)

// AlertSource reads the alerts firing in Prometheus (an *alerts.Source).
type AlertSource interface {
	Report(ctx context.Context) alerts.Report
}

// RegisterAlerts adds GET /api/v1/alerts, the alerts firing in
// Prometheus for the page (a read, like status). src nil answers
// {"configured":false}.
func (a *API) RegisterAlerts(mux *http.ServeMux, src AlertSource) {
	const pattern = "GET /api/v1/alerts"
	mux.Handle(pattern, a.cfg.Metrics.instrument(pattern, a.reads(func(w http.ResponseWriter, r *http.Request) {
		if src == nil {
			writeJSON(w, http.StatusOK, alerts.Report{Firing: []alerts.Alert{}, At: time.Now()})
			return
		}
		writeJSON(w, http.StatusOK, src.Report(r.Context()))
	})))
}
