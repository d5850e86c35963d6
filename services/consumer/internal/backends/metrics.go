package backends

import (
	"strings"

	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sink's Prometheus collectors.
type Metrics struct {
	Stored       *prometheus.CounterVec // records stored, by backend
	WriteErrors  *prometheus.CounterVec // failed writes, by backend
	Up           *prometheus.GaugeVec   // 1 while a backend is in rotation
	Weight       *prometheus.GaugeVec   // weight in the table in force
	Share        *prometheus.GaugeVec   // target share: weight / sum of weights
	BatchRecords prometheus.Histogram   // records per write to one backend
	Stick        *prometheus.CounterVec // keys routed by the stick table, by where the owner came from
	State        *prometheus.GaugeVec   // 1 for the backend's state in force, by backend and state
	StateChanges *prometheus.CounterVec // state changes, by backend and new state
	Duplicates   prometheus.Counter     // records of a second delivery found stored already, not stored again
}

// NewMetrics creates the sink's metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_records_stored_total", Help: "Records stored on a Redis backend.",
		}, []string{"backend"}),
		WriteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_write_errors_total", Help: "Writes to a Redis backend that failed.",
		}, []string{"backend"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_up", Help: "1 while the Redis backend is in rotation, 0 while it is ejected.",
		}, []string{"backend"}),
		Weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_weight", Help: "Weight of the backend in the routing table in force.",
		}, []string{"backend"}),
		Share: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_target_share",
			Help: "Share of records (weighted) or keys (hash) the table gives the backend: weight / sum of weights. The observed share is rate(connpipe_consumer_records_stored_total[1m]) over its sum.",
		}, []string{"backend"}),
		BatchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "connpipe_consumer_store_batch_records", Help: "Records per write round to one Redis backend.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		Stick: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_stick_keys_total",
			Help: "Keys routed by the stick table per round, by result: cache (owner cached), redis (read from the stick home), fallback (stick home down: the mode's choice).",
		}, []string{"result"}),
		State: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connpipe_consumer_backend_state",
			Help: "1 for the Redis backend's state in force: " + stateNames() + ".",
		}, []string{"backend", "state"}),
		StateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connpipe_consumer_backend_state_changes_total", Help: "Changes of a Redis backend's state, by the state entered.",
		}, []string{"backend", "state"}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connpipe_consumer_duplicates_skipped_total",
			Help: "Records of a second delivery of a batch (a redelivery, a republish, the spool after a restart) found stored already and not stored again.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Stored, m.WriteErrors, m.Up, m.Weight, m.Share, m.BatchRecords, m.Stick, m.State, m.StateChanges, m.Duplicates)
	}
	return m
}

// stateNames lists the states a consumer reports, for a metric's help.
func stateNames() string {
	var names []string
	for _, st := range redisconn.ConsumerStates() {
		names = append(names, st.String())
	}
	return strings.Join(names, ", ")
}
