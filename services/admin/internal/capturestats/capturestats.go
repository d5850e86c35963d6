// Package capturestats scrapes a capture's Prometheus /metrics
// (CAPTURE_METRICS_URL) for the numbers the web page shows: packets seen,
// records published and confirmed by the broker, kernel drops and decode
// errors by reason.
package capturestats

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The capture's metrics read.
const (
	MetricPackets      = "connpipe_capture_packets_total"
	MetricPublished    = "connpipe_capture_records_published_total"
	MetricConfirmed    = "connpipe_capture_records_confirmed_total"
	MetricKernelDrops  = "connpipe_capture_kernel_drops_total"
	MetricDecodeErrors = "connpipe_capture_decode_errors_total"
)

// DefaultInterval is the least time between two scrapes.
const DefaultInterval = time.Second

// maxBody bounds a scrape.
const maxBody = 8 << 20

// Stats is one scrape.
type Stats struct {
	Packets      float64            `json:"packets"`
	Published    float64            `json:"records_published"`
	Confirmed    float64            `json:"records_confirmed"`
	KernelDrops  float64            `json:"kernel_drops"`
	DecodeErrors float64            `json:"decode_errors"`           // every reason
	ByReason     map[string]float64 `json:"decode_errors_by_reason"` // by the reason label
	// Missing names the metrics the endpoint did not have (a capture
	// that has not counted any yet, or not a capture at all).
	Missing []string `json:"missing,omitempty"`
}

// Scraper scrapes one URL, at most once per interval; concurrent callers
// within it share the answer. Safe for concurrent use.
type Scraper struct {
	URL      string
	Client   *http.Client  // default: a client with Timeout
	Interval time.Duration // default DefaultInterval
	Timeout  time.Duration // default 2s
	Now      func() time.Time

	mu   sync.Mutex
	last time.Time
	s    Stats
	err  error
}

// Stats returns the capture's numbers.
func (s *Scraper) Stats(ctx context.Context) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	if !s.last.IsZero() && now().Sub(s.last) < interval {
		return s.s, s.err
	}
	s.s, s.err = s.scrape(ctx)
	s.last = now()
	return s.s, s.err
}

func (s *Scraper) scrape(ctx context.Context) (Stats, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		// err quotes the URL whole, password and all: leave it out.
		return Stats{}, fmt.Errorf("CAPTURE_METRICS_URL %s: not a valid URL", broker.Redact(s.URL))
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return Stats{}, fmt.Errorf("scrape capture: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Stats{}, fmt.Errorf("scrape capture %s: %s", broker.Redact(s.URL), resp.Status)
	}
	return Parse(io.LimitReader(resp.Body, maxBody))
}

// Parse reads Prometheus text exposition format.
func Parse(r io.Reader) (Stats, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Stats{}, fmt.Errorf("parse capture metrics: %w", err)
	}
	st := Stats{ByReason: map[string]float64{}}
	for _, m := range []struct {
		name string
		dst  *float64
	}{
		{MetricPackets, &st.Packets},
		{MetricPublished, &st.Published},
		{MetricConfirmed, &st.Confirmed},
		{MetricKernelDrops, &st.KernelDrops},
		{MetricDecodeErrors, &st.DecodeErrors},
	} {
		f, ok := fams[m.name]
		if !ok {
			st.Missing = append(st.Missing, m.name)
			continue
		}
		for _, metric := range f.GetMetric() {
			v := value(metric)
			*m.dst += v
			if m.name == MetricDecodeErrors {
				reason := "unknown"
				for _, l := range metric.GetLabel() {
					if l.GetName() == "reason" {
						reason = l.GetValue()
					}
				}
				st.ByReason[reason] += v
			}
		}
	}
	return st, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
