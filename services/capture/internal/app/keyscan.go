package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/connpipe/connpipe/services/capture/internal/keyscan"
	"github.com/prometheus/client_golang/prometheus"
)

// startKeyScan starts the key scanner when KEY_RULE is set: it holds each
// connection's records until its key is known and then hands them to out.
// stop ends the scanner's timer and releases every record still held
// (without a key), under pubCtx, before the output is closed. Without
// KEY_RULE scan is nil and stop does nothing.
func startKeyScan(ctx, pubCtx context.Context, cfg Config, out output, reg prometheus.Registerer,
	log *slog.Logger) (scan *keyscan.Scanner, stop func() error) {
	rule, _ := cfg.keyRule()
	if rule == nil {
		return nil, func() error { return nil }
	}
	scan = keyscan.New(keyscan.Config{
		Rule: rule, ScanBytes: cfg.KeyScanBytes, Wait: cfg.KeyWait,
		MaxConns: cfg.KeyMaxConns, MaxBytes: cfg.KeyMaxBytes, Metrics: keyscan.NewMetrics(reg),
	}, out)
	log.Info("keying records by payload", "rule", cfg.KeyRule, "scan_bytes", cfg.KeyScanBytes, "wait", cfg.KeyWait)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- scan.Run(runCtx, pubCtx) }()
	return scan, func() error {
		cancel()
		runErr := <-done
		st := scan.Stats()
		if err := scan.Close(pubCtx); err != nil {
			return fmt.Errorf("release %d held records at shutdown: %w", st.Held, err)
		}
		if runErr != nil {
			return fmt.Errorf("key scanner: %w", runErr)
		}
		return nil
	}
}
