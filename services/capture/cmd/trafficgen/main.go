// Command trafficgen opens TCP connections to a target from many source
// addresses, writes a line on each and closes it: traffic for connpipe's
// capture to record in the demo and the compose stack.
//
//	trafficgen -target 127.0.0.1:7000 -sources 127.0.1.1-127.0.1.60 -rate 200 -duration 30s
//
// Every flag can also be given in the environment (TARGET, SOURCES, RATE,
// DURATION, CONCURRENCY). A source range is "A-B" (IPv4, inclusive) or a
// comma list; an empty list uses the kernel's choice. Loopback ranges work
// without any set-up on Linux; other addresses must be on an interface.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], log); err != nil {
		log.Error("trafficgen failed", "err", err)
		stop()
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("trafficgen", flag.ContinueOnError)
	target := fs.String("target", env("TARGET", "127.0.0.1:7000"), "host:port to connect to (TARGET)")
	sources := fs.String("sources", env("SOURCES", "127.0.1.1-127.0.1.60"), "source addresses: A-B range or comma list (SOURCES)")
	rate := fs.Float64("rate", 0, "connections per second, 0 = as fast as concurrency allows (RATE)")
	duration := fs.Duration("duration", 0, "stop after this long, 0 = until SIGTERM (DURATION)")
	conc := fs.Int("concurrency", 16, "connections open at once (CONCURRENCY)")
	total := fs.Int("count", 0, "stop after this many connections, 0 = no limit (COUNT)")
	if err := setFromEnv(fs, map[string]string{"rate": "RATE", "duration": "DURATION", "concurrency": "CONCURRENCY", "count": "COUNT"}); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	srcs, err := parseSources(*sources)
	if err != nil {
		return fmt.Errorf("-sources %q: %w", *sources, err)
	}
	if *conc < 1 {
		return fmt.Errorf("-concurrency %d: must be at least 1", *conc)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	var tick <-chan time.Time
	if *rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *rate))
		defer t.Stop()
		tick = t.C
	}
	var ok, failed atomic.Int64
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	log.Info("sending", "target", *target, "sources", len(srcs), "rate", *rate, "duration", *duration)
	for i := 0; *total == 0 || i < *total; i++ {
		if tick != nil {
			select {
			case <-ctx.Done():
			case <-tick:
			}
		}
		select {
		case <-ctx.Done():
		case sem <- struct{}{}:
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-report.C:
			log.Info("progress", "connections", ok.Load(), "failed", failed.Load())
		default:
		}
		var src netip.Addr
		if len(srcs) > 0 {
			src = srcs[i%len(srcs)]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := connect(ctx, src, *target); err != nil {
				if failed.Add(1) <= 5 {
					log.Warn("connection failed", "src", src, "err", err)
				}
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	log.Info("done", "connections", ok.Load(), "failed", failed.Load())
	if ok.Load() == 0 && failed.Load() > 0 {
		return errors.New("every connection failed")
	}
	return nil
}

func connect(ctx context.Context, src netip.Addr, target string) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "hello from %s at %s\n", conn.LocalAddr(), time.Now().Format(time.RFC3339Nano))
	return err
}

func parseSources(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, err
		}
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return nil, err
		}
		if !a.Is4() || !b.Is4() || b.Less(a) {
			return nil, errors.New("a range must be IPv4 A-B with A <= B")
		}
		var out []netip.Addr
		for x := a; !b.Less(x) && len(out) < 1<<16; x = x.Next() {
			out = append(out, x)
		}
		return out, nil
	}
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func setFromEnv(fs *flag.FlagSet, names map[string]string) error {
	for flagName, envName := range names {
		if v := os.Getenv(envName); v != "" {
			if err := fs.Set(flagName, v); err != nil {
				return fmt.Errorf("%s=%q: %w", envName, v, err)
			}
		}
	}
	return nil
}
