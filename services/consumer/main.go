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
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-h", "-help", "--help", "help":
			app.WriteUsage(os.Stdout)
			return 0
		default:
			fmt.Fprintf(os.Stderr, "consumer: unexpected argument %q: it is configured by the environment (consumer -h lists it)\n", os.Args[1])
			return 2
		}
	}
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
