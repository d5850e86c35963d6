// Command admin serves connpipe's admin HTTP API (admin serve, the default)
// and is its command-line client (admin weights|status|records); see
// internal/cli for the usage.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/cli"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		cli.WriteUsage(os.Stdout)
		fmt.Fprintln(os.Stdout, "\nenvironment of admin serve (name, default, meaning):")
		config.WriteUsage(os.Stdout, app.Config{})
		return 0
	}
	if len(args) > 0 && args[0] != "serve" {
		var env cli.Env
		if err := config.Load(&env); err != nil {
			fmt.Fprintf(os.Stderr, "admin: %v\n", err)
			return cli.ExitUsage
		}
		return cli.Run(ctx, env, args, os.Stdout, os.Stderr)
	}
	cfg, err := app.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "admin: configuration: %v\n", err)
		return 2
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "admin: configuration: %v\n", err)
		return 2
	}
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("admin stopped", "err", err)
		return 1
	}
	return 0
}
