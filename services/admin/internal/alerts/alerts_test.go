package alerts

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const answerJSON = `{"status":"success","data":{"alerts":[
 {"labels":{"alertname":"ConnpipeCaptureSpooling","severity":"warning","instance":"capture:9100"},
  "annotations":{"summary":"capture spools","runbook":"docs/operations.md#connpipecapturespooling"},
  "state":"firing","activeAt":"2026-01-02T03:04:05Z","value":"1e+00"},
 {"labels":{"alertname":"ConnpipeAdminDown","severity":"critical"},"annotations":{},
  "state":"pending","activeAt":"2026-01-02T03:04:05Z","value":"1e+00"},
 {"labels":{"alertname":"ConnpipeBrokerDown","severity":"critical","instance":"rabbitmq:15692"},
  "annotations":{"summary":"broker down"},"state":"firing","activeAt":"2026-01-02T03:05:00Z","value":"1e+00"}]}}`

// fakePrometheus answers /api/v1/alerts with body and counts the requests.
func fakePrometheus(t *testing.T, code int, body string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prom/api/v1/alerts" {
			http.NotFound(w, r)
			return
		}
		hits.Add(1)
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func source(t *testing.T, raw string) (*Source, *prometheus.Registry, *time.Time) {
	t.Helper()
	u, err := ParseURL("PROMETHEUS_URL", raw)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := New(u, "", reg)
	now := time.Unix(1_700_000_000, 0)
	s.now = func() time.Time { return now }
	return s, reg, &now
}

func TestFiringAlertsCriticalFirstAndCached(t *testing.T) {
	srv, hits := fakePrometheus(t, http.StatusOK, answerJSON)
	s, _, now := source(t, srv.URL+"/prom/")
	r := s.Report(context.Background())
	if r.Error != "" || !r.Configured {
		t.Fatalf("report %+v", r)
	}
	var names []string
	for _, a := range r.Firing {
		names = append(names, a.Name)
	}
	if got := strings.Join(names, ","); got != "ConnpipeBrokerDown,ConnpipeCaptureSpooling" {
		t.Fatalf("firing %s, want the broker (critical) then spooling, and no pending alert", got)
	}
	sp := r.Firing[1]
	if sp.Severity != "warning" || sp.Summary != "capture spools" || sp.Runbook != "docs/operations.md#connpipecapturespooling" ||
		sp.Labels["instance"] != "capture:9100" || sp.Labels["alertname"] != "" || !sp.ActiveAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("spooling alert %+v", sp)
	}
	if r.Link != srv.URL+"/prom" {
		t.Fatalf("link %q, want PROMETHEUS_URL", r.Link)
	}
	for range 5 {
		s.Report(context.Background())
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d requests to Prometheus within the TTL, want 1", n)
	}
	*now = now.Add(DefaultTTL)
	s.Report(context.Background())
	if n := hits.Load(); n != 2 {
		t.Fatalf("%d requests after the TTL, want 2", n)
	}
}

func TestBadAnswersAreErrorsCountedWithoutCredentials(t *testing.T) {
	for name, tc := range map[string]struct {
		code int
		body string
		want string
	}{
		"server error": {http.StatusInternalServerError, "boom", "answered 500"},
		"not json":     {http.StatusOK, "<html>", "not its alerts JSON"},
		"api error":    {http.StatusOK, `{"status":"error","error":"bad"}`, `status "error"`},
		"too large":    {http.StatusOK, `{"status":"success","data":{"alerts":[` + strings.Repeat(" ", maxBody) + `]}}`, "over"},
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := fakePrometheus(t, tc.code, tc.body)
			s, reg, _ := source(t, strings.Replace(srv.URL, "http://", "http://viewer:s3cret@", 1)+"/prom")
			r := s.Report(context.Background())
			if !strings.Contains(r.Error, tc.want) || len(r.Firing) != 0 {
				t.Fatalf("error %q, firing %d; want an error with %q and nothing firing", r.Error, len(r.Firing), tc.want)
			}
			if strings.Contains(r.Error, "s3cret") || strings.Contains(r.Link, "s3cret") {
				t.Fatalf("the password shows: error %q, link %q", r.Error, r.Link)
			}
			if v := testutil.ToFloat64(s.errs); v != 1 {
				t.Fatalf("errors counted %v, want 1", v)
			}
			if n, err := testutil.GatherAndCount(reg, "connpipe_admin_prometheus_errors_total"); err != nil || n != 1 {
				t.Fatalf("counter registered %d (%v)", n, err)
			}
		})
	}
}

func TestUnreachablePrometheusIsAnError(t *testing.T) {
	srv, _ := fakePrometheus(t, http.StatusOK, answerJSON)
	raw := strings.Replace(srv.URL, "http://", "http://viewer:s3cret@", 1)
	srv.Close()
	s, _, _ := source(t, raw)
	r := s.Report(context.Background())
	if !strings.HasPrefix(r.Error, "prometheus unreachable") || strings.Contains(r.Error, "s3cret") {
		t.Fatalf("error %q", r.Error)
	}
}

func TestParseURLRefusesNonHTTP(t *testing.T) {
	for _, raw := range []string{"prometheus:9090", "ftp://x", "http://", "http://x/?a=b", ":"} {
		if _, err := ParseURL("PROMETHEUS_URL", raw); err == nil || !strings.Contains(err.Error(), "PROMETHEUS_URL") {
			t.Errorf("ParseURL(%q) = %v, want an error naming PROMETHEUS_URL", raw, err)
		}
	}
}
