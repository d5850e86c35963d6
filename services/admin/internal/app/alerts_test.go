package app_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connpipe/connpipe/services/admin/internal/alerts"
	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/config"
)

// With PROMETHEUS_URL, GET /api/v1/alerts lists what fires there, read by
// admin (once for many readers) and behind the read token; the page gets
// the link to Prometheus from it.
func TestAlertsFromPrometheus(t *testing.T) {
	var hits atomic.Int64
	const firing = `{"status":"success","data":{"alerts":[{"labels":{"alertname":"ConnpipeBrokerDown","severity":"critical"},` +
		`"annotations":{"summary":"broker down","runbook":"docs/operations.md#connpipebrokerdown"},"state":"firing","activeAt":"2026-01-02T03:04:05Z"}]}}`
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/alerts", func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); fmt.Fprint(w, firing) })
	prom := httptest.NewServer(mux)
	t.Cleanup(prom.Close)
	e := apptest.Start(t, func(c *app.Config) {
		c.PrometheusURL = prom.URL
		c.PrometheusLinkURL = "http://127.0.0.1:19090/"
	})
	if a := apptest.Call(t, http.MethodGet, e.URL+"/api/v1/alerts", "", nil); a.Code != http.StatusUnauthorized {
		t.Fatalf("without a token: %d %s, want 401", a.Code, a.Body)
	}
	var rep alerts.Report
	for range 3 {
		a := e.Read(t, "/api/v1/alerts")
		a.Decode(t, &rep)
		if a.Code != http.StatusOK || !rep.Configured || len(rep.Firing) != 1 || rep.Firing[0].Name != "ConnpipeBrokerDown" ||
			rep.Link != "http://127.0.0.1:19090" || rep.Error != "" {
			t.Fatalf("alerts: %d %s", a.Code, a.Body)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("Prometheus asked %d times for three reads within the cache's life, want 1", n)
	}
	page := apptest.Call(t, http.MethodGet, e.URL+"/", "", nil)
	if !strings.Contains(string(page.Body), `id="alerts-section"`) {
		t.Fatal("the page has no alerts section")
	}
}

func TestAlertsWithoutPrometheus(t *testing.T) {
	e := apptest.Start(t, nil)
	var rep alerts.Report
	a := e.Read(t, "/api/v1/alerts")
	a.Decode(t, &rep)
	if a.Code != http.StatusOK || rep.Configured || rep.Firing == nil || len(rep.Firing) != 0 {
		t.Fatalf("alerts without PROMETHEUS_URL: %d %s", a.Code, a.Body)
	}
}

func TestPrometheusURLMustBeHTTP(t *testing.T) {
	for _, name := range []string{"PROMETHEUS_URL", "PROMETHEUS_LINK_URL"} {
		c := app.Config{Auth: apitypes.Auth{Token: "t"}, Store: config.Store{Retention: 1, RedisPrefix: "p"}, ConsumerTimeout: 1, HTTPAddr: "127.0.0.1:0",
			Pool: config.Pool{Backends: "redis-a=127.0.0.1:6379", Weights: "redis-a=1"}}
		if name == "PROMETHEUS_URL" {
			c.PrometheusURL = "prometheus:9090"
		} else {
			c.PrometheusLinkURL = "prometheus:9090"
		}
		if _, err := c.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=prometheus:9090: %v, want an error naming it", name, err)
		}
	}
}
