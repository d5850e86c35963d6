package api

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are admin's Prometheus metrics:
//
//	connpipe_admin_http_requests_total{route,code}   API requests answered
//	connpipe_admin_control_published_total{result}   weight changes sent to the control log:
//	                                                 applied, refused (by the fold) or failed (not published)
//	connpipe_admin_heartbeats_total{result}          consumer heartbeats received: ok, or refused as
//	                                                 invalid, too_large, too_many_entries or too_many_members
//	connpipe_admin_consumers_alive                   consumers heard from within CONSUMER_TIMEOUT
//	connpipe_admin_control_version                   version of the table in force
//	connpipe_admin_control_ready                     1 once the control log has been read
type Metrics struct {
	requests   *prometheus.CounterVec
	publishes  *prometheus.CounterVec
	heartbeats *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg. alive, version and ready are
// read at scrape time.
func NewMetrics(reg prometheus.Registerer, alive func() int, version func() int64, ready func() bool) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_admin_http_requests_total", Help: "API requests answered, by route and status code.",
		}, []string{"route", "code"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_admin_control_published_total", Help: "Weight changes sent to the control log, by result: applied, refused by the fold, or failed to publish.",
		}, []string{"result"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_admin_heartbeats_total", Help: "Consumer heartbeats received, by result: ok, or refused as invalid, too_large, too_many_entries or too_many_members.",
		}, []string{"result"}),
	}
	for _, r := range []string{"applied", "refused", "failed"} {
		m.publishes.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "invalid", "too_large", "too_many_entries", "too_many_members"} {
		m.heartbeats.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.publishes, m.heartbeats,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "connpipe_admin_consumers_alive", Help: "Consumers heard from within CONSUMER_TIMEOUT.",
		}, func() float64 { return float64(alive()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "connpipe_admin_control_version", Help: "Version of the routing table in force.",
		}, func() float64 { return float64(version()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "connpipe_admin_control_ready", Help: "1 once the control log has been read to its end as of start.",
		}, func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
	)
	return m
}

// HeartbeatOK counts a heartbeat folded into the membership.
func (m *Metrics) HeartbeatOK() { m.heartbeats.WithLabelValues("ok").Inc() }

// HeartbeatRefused counts a message on the heartbeat exchange that was not
// folded, by reason (members.Counters.Refused).
func (m *Metrics) HeartbeatRefused(reason string) { m.heartbeats.WithLabelValues(reason).Inc() }

func (m *Metrics) published(result string) { m.publishes.WithLabelValues(result).Inc() }

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (m *Metrics) instrument(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h(rec, r)
		m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}
