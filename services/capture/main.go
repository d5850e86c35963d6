// Command capture records every TCP packet sent to a listening IP:port and
// publishes the records in batches to RabbitMQ, or prints them; with
// `capture -r FILE` it prints the TCP packets of capture files like
// tcpdump -r. Run `capture -h` for the flags and the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/connpipe/connpipe/services/capture/internal/app"
	"github.com/connpipe/connpipe/shared/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := app.LoadConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	log, lerr := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err = errors.Join(err, lerr); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		stop()
		os.Exit(2)
	}
	if n := cfg.Processors(os.Getenv); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("capture stopped", "err", err)
		stop()
		os.Exit(1)
	}
}
