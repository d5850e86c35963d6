// Command consumer takes records off the conn.records queue, routes each
// one by the runtime weights of the control log and stores it in Redis.
// It is configured from the environment; see internal/app.Config.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/connpipe/connpipe/services/consumer/internal/app"
	"github.com/connpipe/connpipe/shared/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx)
	stop()
	os.Exit(code)
}

func run(ctx context.Context) int {
	cfg, err := app.LoadConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consumer: configuration: %v\n", err)
		return 2
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "consumer: configuration: %v\n", err)
		return 2
	}
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("consumer stopped", "err", err)
		return 1
	}
	return 0
}
