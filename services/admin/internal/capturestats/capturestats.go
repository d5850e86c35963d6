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
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/recent"
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

	// Present only where capture spools (SPOOL_DIR) or publishes.
	MetricSpoolRecords   = "connpipe_capture_spool_records"
	MetricSpoolBytes     = "connpipe_capture_spool_bytes"
	MetricSpoolMaxBytes  = "connpipe_capture_spool_max_bytes"
	MetricSpoolOldest    = "connpipe_capture_spool_oldest_age_seconds"
	MetricSpoolDropped   = "connpipe_capture_spool_dropped_total"
	MetricSpoolDrainRate = "connpipe_capture_spool_drain_records_per_second"
	MetricBrokerBlocked  = "connpipe_capture_broker_blocked"
	MetricRingFreezes    = "connpipe_capture_ring_freezes_total"
)

// DefaultInterval is the least time between two scrapes.
const DefaultInterval = recent.DefaultInterval

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
	// The disk spool and the broker's flow control (zero where capture
	// has no spool).
	SpoolRecords   float64 `json:"spool_records"`
	SpoolBytes     float64 `json:"spool_bytes"`
	SpoolMaxBytes  float64 `json:"spool_max_bytes"`
	SpoolOldestSec float64 `json:"spool_oldest_seconds"`
	SpoolDropped   float64 `json:"spool_dropped"`
	DrainRate      float64 `json:"spool_drain_per_second"`
	BrokerBlocked  float64 `json:"broker_blocked"`
	// Live capture's readers (one ring each): kernel drops by reader, and
	// how often a reader's ring filled up.
	DropsByWorker map[string]float64 `json:"kernel_drops_by_worker,omitempty"`
	RingFreezes   float64            `json:"ring_freezes"`
	// Missing names the metrics the endpoint did not have (a capture
	// that has not counted any yet, or not a capture at all).
	Missing []string `json:"missing,omitempty"`
}

// Scraper scrapes one URL, at most once per interval; concurrent callers
// within it share the answer. Safe for concurrent use.
type Scraper struct {
	URL      string
	Token    string        // sent as a bearer token when set (capture's METRICS_TOKEN)
	Client   *http.Client  // default: a client with Timeout
	Interval time.Duration // default DefaultInterval
	Timeout  time.Duration // default 2s
	Now      func() time.Time

	last recent.Value[Stats]
}

// Stats returns the capture's numbers.
func (s *Scraper) Stats(ctx context.Context) (Stats, error) {
	return s.last.Get(ctx, s.Interval, s.Now, s.scrape)
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
		return Stats{}, fmt.Errorf("CAPTURE_METRICS_URL: %w", err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	if s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Stats{}, fmt.Errorf("scrape capture: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Stats{}, fmt.Errorf("scrape capture %s: %s", req.URL.Redacted(), resp.Status)
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
			if w := label(metric, "worker"); m.name == MetricKernelDrops && w != "" {
				if st.DropsByWorker == nil {
					st.DropsByWorker = map[string]float64{}
				}
				st.DropsByWorker[w] += v
			}
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
	for _, m := range []struct {
		name string
		dst  *float64
	}{
		{MetricSpoolRecords, &st.SpoolRecords},
		{MetricSpoolBytes, &st.SpoolBytes},
		{MetricSpoolMaxBytes, &st.SpoolMaxBytes},
		{MetricSpoolOldest, &st.SpoolOldestSec},
		{MetricSpoolDropped, &st.SpoolDropped},
		{MetricSpoolDrainRate, &st.DrainRate},
		{MetricBrokerBlocked, &st.BrokerBlocked},
		{MetricRingFreezes, &st.RingFreezes},
	} {
		if f, ok := fams[m.name]; ok {
			for _, metric := range f.GetMetric() {
				*m.dst += value(metric)
			}
		}
	}
	return st, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
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
