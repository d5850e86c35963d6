package app

import (
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/prometheus/client_golang/prometheus"
)

// registerControlSessions exports how many times the control log's session
// reached the broker (the first connection included), so a log that keeps
// reconnecting can be alerted on.
func registerControlSessions(reg prometheus.Registerer, r *controllog.Reader) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "connpipe_consumer_control_sessions_total",
		Help: "Control log sessions that reached RabbitMQ, the first included; a rise means the log reconnected.",
	}, func() float64 { return float64(r.Broker().Sessions) }))
}
