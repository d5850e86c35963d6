// Package alerts reads the alerts that fire from Prometheus
// (PROMETHEUS_URL, GET /api/v1/alerts) for admin's page, server side and
// cached, so any number of open pages ask Prometheus at most once per TTL.
package alerts

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits.
const (
	DefaultTTL     = 10 * time.Second
	requestTimeout = 3 * time.Second
	maxBody        = 4 << 20 // bytes of Prometheus's answer read at most
	MaxAlerts      = 100     // firing alerts reported at most (critical first)
)

// Alert is one firing alert as the page shows it.
type Alert struct {
	Name     string            `json:"name"`
	Severity string            `json:"severity,omitempty"`
	Summary  string            `json:"summary,omitempty"`
	Runbook  string            `json:"runbook,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"` // less alertname and severity
	ActiveAt time.Time         `json:"active_at"`
}

// Report is the answer of GET /api/v1/alerts.
type Report struct {
	Configured bool      `json:"configured"`     // PROMETHEUS_URL is set
	Link       string    `json:"link,omitempty"` // Prometheus's UI for a browser
	Firing     []Alert   `json:"firing"`
	Truncated  int       `json:"truncated,omitempty"` // firing alerts left out over MaxAlerts
	Error      string    `json:"error,omitempty"`     // why Prometheus could not be read
	At         time.Time `json:"at"`                  // when Prometheus was asked
}

// ParseURL checks a Prometheus base URL (http or https, no query).
func ParseURL(name, raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("%s: want an http(s) URL such as http://127.0.0.1:9090", name)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// Source asks Prometheus for its alerts and caches the answer for TTL,
// errors included.
type Source struct {
	base   *url.URL
	link   string
	ttl    time.Duration
	client *http.Client
	errs   prometheus.Counter
	now    func() time.Time

	mu      sync.Mutex
	last    Report
	fetched time.Time
}

// New returns a source for Prometheus at base; link is the URL the page
// links to (base when empty). Failed reads are counted on reg.
func New(base *url.URL, link string, reg prometheus.Registerer) *Source {
	if link == "" {
		link = base.Redacted()
	}
	s := &Source{base: base, link: link, ttl: DefaultTTL, client: &http.Client{Timeout: requestTimeout}, now: time.Now,
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_admin_prometheus_errors_total",
			Help: "Reads of Prometheus's alerts (PROMETHEUS_URL) that failed.",
		})}
	if reg != nil {
		reg.MustRegister(s.errs)
	}
	return s
}

// Report returns the alerts firing, read at most once per TTL.
func (s *Source) Report(ctx context.Context) Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fetched.IsZero() && s.now().Sub(s.fetched) < s.ttl {
		return s.last
	}
	r := Report{Configured: true, Link: s.link, Firing: []Alert{}, At: s.now()}
	firing, err := s.fetch(ctx)
	if err != nil {
		s.errs.Inc()
		r.Error = err.Error()
	} else {
		r.Firing, r.Truncated = firing, max(0, len(firing)-MaxAlerts)
		r.Firing = r.Firing[:min(len(firing), MaxAlerts)]
	}
	s.last, s.fetched = r, s.now()
	return r
}

// answer is the part of Prometheus's /api/v1/alerts answer read here.
type answer struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Alerts []struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
			State       string            `json:"state"`
			ActiveAt    time.Time         `json:"activeAt"`
		} `json:"alerts"`
	} `json:"data"`
}

// fetch reads the firing alerts, critical first, then by name. Its errors
// never carry the URL (which may hold credentials).
func (s *Source) fetch(ctx context.Context) ([]Alert, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base.JoinPath("api", "v1", "alerts").String(), nil)
	if err != nil {
		return nil, errors.New("prometheus: bad PROMETHEUS_URL")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("prometheus unreachable: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("prometheus: read answer: %w", err)
	case len(body) > maxBody:
		return nil, fmt.Errorf("prometheus: answer over %d bytes", maxBody)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("prometheus answered %s", resp.Status)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("prometheus: answer is not its alerts JSON: %w", err)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("prometheus: status %q: %s", a.Status, a.Error)
	}
	out := []Alert{}
	for _, al := range a.Data.Alerts {
		if al.State != "firing" {
			continue
		}
		labels := map[string]string{}
		for k, v := range al.Labels {
			if k != "alertname" && k != "severity" {
				labels[k] = v
			}
		}
		out = append(out, Alert{Name: al.Labels["alertname"], Severity: al.Labels["severity"],
			Summary: al.Annotations["summary"], Runbook: al.Annotations["runbook"], Labels: labels, ActiveAt: al.ActiveAt})
	}
	slices.SortFunc(out, func(x, y Alert) int {
		return cmp.Or(cmp.Compare(rank(x.Severity), rank(y.Severity)), cmp.Compare(x.Name, y.Name), x.ActiveAt.Compare(y.ActiveAt))
	})
	return out, nil
}

func rank(severity string) int {
	switch severity {
	case "critical":
		return 0
	case "warning":
		return 1
	}
	return 2
}
