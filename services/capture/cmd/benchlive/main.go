//go:build linux

// Command benchlive measures live capture beside tcpdump on the same
// traffic: it creates two network namespaces joined by a veth pair, injects
// exactly N crafted Ethernet/IPv4/TCP frames into one end at fixed rates
// (and as fast as the injector can), and for each rate runs, one after the
// other on the other end of the pair: tcpdump (-B 8192 -w /dev/null with the
// same filter), capture with OUTPUT=stdout to /dev/null (1 and 2 workers) and
// capture with OUTPUT=amqp to the test RabbitMQ (2 workers), counting
// confirmed records. It prints, per rate and tool, the frames offered, the
// records, the kernel drops and the CPU time per packet (from
// /proc/PID/task/*/schedstat, taken from just before the first frame to
// just after the last one was processed), and capture's CPU as a multiple of
// tcpdump's.
//
// With -mirror every frame goes inside VXLAN to the capture interface's
// address, as a mirror source sends it: tcpdump captures the tunnel frames
// (udp dst port 4789) and capture runs in mirror mode (DECAP=vxlan),
// recording the packet inside each.
//
// Run it as root through make bench-live. It removes its namespaces when it
// ends, and its RabbitMQ virtual hosts after each run.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	port        = 7210 // the listen port the frames go to
	proxyPort   = 7200 // in the capture namespace: forwards to the broker
	metricsPort = 7201 // capture's metrics, in the capture namespace
	flows       = 256
)

type options struct {
	rates    []float64 // 0: as fast as possible
	seconds  float64
	maxN     uint64
	minN     uint64
	workers  []int
	amqp     bool
	amqpURL  string
	mgmtURL  string
	capture  string
	settle   time.Duration
	tcpdump  string
	injBatch int
	only     string
	perf     string
	pin      bool
	repeat   int
	env      []string
	mirror   bool
}

// Mirror mode's tunnel: from the injector's side to the capture
// interface's address, VXLAN network id mirrorVNI.
var (
	mirrorSrc = net.IPv4(10, 78, 0, 1)
	mirrorDst = net.IPv4(10, 78, 0, 2)
)

const mirrorVNI = 4242

func main() {
	var o options
	rates := flag.String("rates", "50000,100000,200000,400000,800000,max", "packets per second to offer, comma-separated; max: as fast as the injector can")
	flag.Float64Var(&o.seconds, "seconds", 2, "frames offered per rate: rate x seconds (within -min-n..-max-n)")
	flag.Uint64Var(&o.minN, "min-n", 200000, "fewest frames offered at a rate")
	flag.Uint64Var(&o.maxN, "max-n", 2000000, "most frames offered at a rate, and the number offered at max")
	workers := flag.String("workers", "1,2", "CAPTURE_WORKERS values to run with OUTPUT=stdout")
	flag.BoolVar(&o.amqp, "amqp", true, "also run OUTPUT=amqp (with the largest -workers value)")
	flag.StringVar(&o.amqpURL, "amqp-url", env("CONNPIPE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/"), "broker for OUTPUT=amqp")
	flag.StringVar(&o.mgmtURL, "mgmt-url", env("CONNPIPE_TEST_MGMT", "http://guest:guest@127.0.0.1:15672"), "broker management API (creates a virtual host per run)")
	flag.StringVar(&o.capture, "capture", "", "capture binary (default: build it)")
	flag.StringVar(&o.tcpdump, "tcpdump", "tcpdump", "tcpdump binary")
	flag.DurationVar(&o.settle, "settle", 1200*time.Millisecond, "wait after the last frame before reading the counters (covers tcpdump's 1 s block timeout)")
	flag.IntVar(&o.injBatch, "batch", 64, "frames per sendmmsg")
	flag.StringVar(&o.only, "only", "", "run only the tools whose name contains this (tcpdump always runs, as the reference)")
	extraEnv := flag.String("env", "", "extra capture settings, comma-separated VAR=value (e.g. BATCH_SIZE=4096)")
	flag.StringVar(&o.perf, "perf", "", "record a perf profile of each capture run into this directory")
	flag.BoolVar(&o.pin, "pin", false, "run the injector on CPU 0 and each tool on the other CPUs (taskset), so a tool's figures are its own cores'")
	flag.BoolVar(&o.mirror, "mirror", false, "send every frame inside VXLAN to the capture interface's address; capture runs with DECAP=vxlan")
	flag.IntVar(&o.repeat, "repeat", 3, "rounds per rate, each running every tool in turn; a row gives the median CPU and the worst counts")
	flag.Parse()
	if o.repeat < 1 {
		fmt.Fprintln(os.Stderr, "benchlive: -repeat: want 1 or more")
		os.Exit(2)
	}
	for _, kv := range strings.Split(*extraEnv, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			o.env = append(o.env, kv)
		}
	}
	var err error
	if o.rates, err = parseRates(*rates); err != nil {
		fmt.Fprintln(os.Stderr, "benchlive: -rates:", err)
		os.Exit(2)
	}
	for _, w := range strings.Split(*workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "benchlive: -workers: %q\n", w)
			os.Exit(2)
		}
		o.workers = append(o.workers, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchlive:", err)
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "max" {
			out = append(out, 0)
			continue
		}
		r, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(f, "k"), "K"), 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("bad rate %q", f)
		}
		if strings.HasSuffix(strings.ToLower(f), "k") {
			r *= 1000
		}
		out = append(out, r)
	}
	return out, nil
}
