package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/publish"
	"github.com/connpipe/connpipe/services/capture/internal/spool"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus"
)

// openSpool opens SPOOL_DIR; nil without one.
func openSpool(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*spool.Spool, error) {
	if cfg.SpoolDir == "" {
		return nil, nil
	}
	sp, err := spool.Open(spool.Options{
		Dir: cfg.SpoolDir, MaxBytes: cfg.SpoolMaxBytes,
		Full: spool.FullPolicy(cfg.SpoolFullPolicy), Fsync: spool.FsyncPolicy(cfg.SpoolFsync),
		Logger: log, Metrics: spool.NewMetrics(reg),
	})
	if err != nil {
		return nil, fmt.Errorf("SPOOL_DIR=%q: %w", cfg.SpoolDir, err)
	}
	log.Info("spool open", "dir", cfg.SpoolDir, "max_bytes", cfg.SpoolMaxBytes,
		"full_policy", cfg.SpoolFullPolicy, "fsync", cfg.SpoolFsync)
	return sp, nil
}

// brokerHealth is /healthz with OUTPUT=amqp: an error (503, its text the
// body) while the broker blocks publishing or cannot be reached.
func brokerHealth(pub *publish.Publisher, sp *spool.Spool) error {
	spooled := ""
	if sp != nil {
		st := sp.Stats()
		spooled = fmt.Sprintf("; spool: %d records in %d batches, %d bytes", st.Records, st.Batches, st.Bytes)
		if st.Oldest != 0 {
			spooled += fmt.Sprintf(", oldest %s", time.Since(time.Unix(0, st.Oldest)).Round(time.Second))
		}
	}
	if blocked, why := pub.Blocked(); blocked {
		return fmt.Errorf("broker blocked publishing (connection.blocked: %s), batches go to the spool%s", why, spooled)
	}
	if rejecting, since := pub.Rejecting(); rejecting {
		return fmt.Errorf("broker rejects publishing since %s (the records queue is at its length limit, policy %s): batches are published again until it has room%s",
			since.UTC().Format(time.RFC3339), topology.RecordsPolicyName, spooled)
	}
	if !pub.Connected() {
		if sp != nil {
			return fmt.Errorf("broker unreachable (%s), batches go to the spool%s", pub.Broker(), spooled)
		}
		return fmt.Errorf("not connected to the broker: %s", pub.Broker())
	}
	return nil
}

// stopEarly, at a shutdown (ctx ended) with a spool, stops publishing at
// once instead of after SHUTDOWN_TIMEOUT when the broker cannot confirm
// anything anyway (unreachable or blocked): what is unconfirmed goes to the
// spool and is sent at the next start. It runs after the batcher is
// closed, so no accepted record is in flight outside the shipper.
func stopEarly(sp *spool.Spool, pub *publish.Publisher, cancel context.CancelCauseFunc) {
	if sp == nil {
		return
	}
	blocked, _ := pub.Blocked()
	if blocked || !pub.Connected() {
		cancel(errors.New("stopping while the broker is away; the spool keeps what is unconfirmed"))
	}
}
