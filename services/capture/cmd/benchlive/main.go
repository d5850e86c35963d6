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
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
	"golang.org/x/sys/unix"
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

// tool is one contender.
type tool struct {
	name    string
	tcpdump bool
	workers int
	output  string // stdout or amqp
}

// result is one tool at one rate.
type result struct {
	offered   uint64
	records   uint64
	drops     uint64
	confirmed uint64
	cpu       time.Duration
	wakeups   uint64 // times a thread of the tool was scheduled in
	err       error
}

func (r result) usPerPacket() float64 {
	if r.records == 0 {
		return 0
	}
	return r.cpu.Seconds() * 1e6 / float64(r.records)
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces and opens AF_PACKET sockets")
	}
	tcpdump, err := exec.LookPath(o.tcpdump)
	if err != nil {
		return fmt.Errorf("tcpdump is needed (apt-get install tcpdump): %w", err)
	}
	tmp, err := os.MkdirTemp("", "benchlive")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.capture == "" {
		o.capture = filepath.Join(tmp, "capture")
		build := exec.Command("go", "build", "-o", o.capture, "github.com/connpipe/connpipe/services/capture")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build capture: %v\n%s", err, out)
		}
	}
	lab, err := vethlab.New(fmt.Sprintf("cpbench-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer func() {
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "benchlive: remove namespaces:", err)
		}
	}()
	b := &bench{o: o, lab: lab, tcpdump: tcpdump}
	frameLen := vethlab.FrameLen
	if o.mirror {
		if out, err := exec.Command("ip", "-n", lab.Rx, "addr", "add", mirrorDst.String()+"/24", "dev", lab.RxIf).CombinedOutput(); err != nil {
			return fmt.Errorf("ip addr add: %v: %s", err, out)
		}
		frameLen = vethlab.VXLANLen
	}
	if o.amqp {
		if err := b.startProxy(ctx); err != nil {
			return err
		}
	}

	tools := []tool{{name: "tcpdump", tcpdump: true}}
	for _, w := range o.workers {
		tools = append(tools, tool{name: fmt.Sprintf("capture stdout w=%d", w), workers: w, output: "stdout"})
	}
	if o.amqp {
		w := o.workers[len(o.workers)-1]
		tools = append(tools, tool{name: fmt.Sprintf("capture amqp w=%d", w), workers: w, output: "amqp"})
	}

	fmt.Printf("live capture beside tcpdump: frames of %d bytes in %d flows over a veth pair (%s -> %s), %d CPUs\n",
		frameLen, flows, lab.TxIf, lab.RxIf, numCPU())
	if o.mirror {
		fmt.Printf("mirror mode: each frame inside VXLAN (VNI %d) from %s to %s; tcpdump captures the tunnel frames, capture runs with DECAP=vxlan\n", mirrorVNI, mirrorSrc, mirrorDst)
	}
	if len(o.env) > 0 {
		fmt.Printf("capture settings: %s\n", strings.Join(o.env, " "))
	}
	if o.pin {
		if numCPU() < 2 {
			return errors.New("-pin needs 2 CPUs or more")
		}
		fmt.Printf("pinned: the injector on CPU 0, each tool on CPUs %s\n", b.toolCPUs())
	}
	if o.repeat > 1 {
		fmt.Printf("%d rounds per rate, each tool in turn: CPU, sent/s and wake-ups are medians; records and confirmed the fewest, drops the most; vs tcpdump is the median of the rounds' ratios (capture's CPU over tcpdump's in the same round), range their least and most\n", o.repeat)
	}
	const row = "%7s %8s %8s  %-20s %9s %9s %9s %10s %10s %11s %8s\n"
	fmt.Printf(row, "rate", "offered", "sent/s", "tool", "records", "drops", "confirmed", "CPU µs/pkt", "vs tcpdump", "range", "wakeups")
	for _, rate := range o.rates {
		n := o.maxN
		if rate > 0 {
			n = min(max(uint64(rate*o.seconds), o.minN), o.maxN)
		}
		rateName := "max"
		if rate > 0 {
			rateName = strconv.FormatFloat(rate, 'f', 0, 64)
		}
		// Every tool runs once a round, so a drift of the machine
		// weighs on all of them alike.
		rounds := make([][]round, len(tools))
		for range o.repeat {
			for i, t := range tools {
				if !t.tcpdump && !strings.Contains(t.name, o.only) {
					continue
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res, sentRate := b.runOne(ctx, t, n, rate)
				rounds[i] = append(rounds[i], round{res: res, sent: sentRate})
			}
		}
		base := summarize(rounds[0])
		for i, t := range tools {
			if len(rounds[i]) == 0 {
				continue
			}
			sum := summarize(rounds[i])
			res := sum.res
			if res.err != nil {
				fmt.Printf("%7s %8d %8.0f  %-20s error: %v\n", rateName, res.offered, sum.sent, t.name, res.err)
				continue
			}
			conf, ratio, spread := "", "", ""
			if t.output == "amqp" {
				conf = strconv.FormatUint(res.confirmed, 10)
			}
			if !t.tcpdump && base.res.err == nil {
				if rs := ratios(rounds[i], rounds[0]); len(rs) > 0 {
					ratio = fmt.Sprintf("%.2fx", rs[len(rs)/2])
					if len(rs) > 1 {
						spread = fmt.Sprintf("%.2f-%.2f", rs[0], rs[len(rs)-1])
					}
				}
			}
			fmt.Printf(row, rateName, strconv.FormatUint(res.offered, 10), fmt.Sprintf("%.0f", sum.sent), t.name,
				strconv.FormatUint(res.records, 10), strconv.FormatUint(res.drops, 10), conf,
				fmt.Sprintf("%.3f", sum.us), ratio, spread, strconv.FormatUint(res.wakeups, 10))
		}
	}
	return nil
}

// round is one run of a tool at a rate, or a summary of several.
type round struct {
	res  result
	sent float64 // frames per second the injector reached
	us   float64 // CPU µs per packet (in a summary, the median round's)
}

// summarize makes one row of a tool's rounds: the median CPU (with the
// round's records, so CPU per packet is that round's), sent rate and
// wake-ups, the fewest records and confirms, the most drops, and the
// first error.
func summarize(rs []round) round {
	if len(rs) == 0 {
		return round{res: result{err: errors.New("not run")}}
	}
	byCPU := slices.Clone(rs)
	slices.SortFunc(byCPU, func(a, b round) int { return cmp.Compare(a.res.usPerPacket(), b.res.usPerPacket()) })
	out := byCPU[len(byCPU)/2]
	out.us = out.res.usPerPacket()
	sent := make([]float64, len(rs))
	wakes := make([]uint64, len(rs))
	for i, r := range rs {
		sent[i], wakes[i] = r.sent, r.res.wakeups
		out.res.records = min(out.res.records, r.res.records)
		out.res.confirmed = min(out.res.confirmed, r.res.confirmed)
		out.res.drops = max(out.res.drops, r.res.drops)
		if out.res.err == nil {
			out.res.err = r.res.err
		}
	}
	slices.Sort(sent)
	slices.Sort(wakes)
	out.sent, out.res.wakeups = sent[len(sent)/2], wakes[len(wakes)/2]
	return out
}

// ratios is a tool's CPU per packet over tcpdump's in the same round, for
// every round, sorted. The two ran a few seconds apart, so a drift of the
// machine mostly cancels out of their ratio.
func ratios(rs, base []round) []float64 {
	var out []float64
	for i := range min(len(rs), len(base)) {
		b, r := base[i].res.usPerPacket(), rs[i].res.usPerPacket()
		if b > 0 && r > 0 && base[i].res.err == nil && rs[i].res.err == nil {
			out = append(out, r/b)
		}
	}
	slices.Sort(out)
	return out
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return bytes.Count(b, []byte("\nprocessor")) + 1
}

// toolCPUs is the CPU list a pinned tool runs on: every CPU but 0.
func (b *bench) toolCPUs() string {
	if n := numCPU(); n > 2 {
		return fmt.Sprintf("1-%d", n-1)
	}
	return "1"
}

// pinned prefixes a command with taskset when -pin is set.
func (b *bench) pinned(args ...string) []string {
	if !b.o.pin {
		return args
	}
	return append([]string{"taskset", "-c", b.toolCPUs()}, args...)
}

type bench struct {
	o       options
	lab     *vethlab.Lab
	tcpdump string
	http    *http.Client
}

// startProxy listens on 127.0.0.1:proxyPort inside the capture namespace
// and forwards each connection to the broker, so capture, confined to the
// namespace, reaches it.
func (b *bench) startProxy(ctx context.Context) error {
	u, err := url.Parse(b.o.amqpURL)
	if err != nil {
		return fmt.Errorf("-amqp-url: %w", err)
	}
	broker := u.Host
	var ln net.Listener
	if err := vethlab.Do(b.lab.Rx, func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", proxyPort))
		return err
	}); err != nil {
		return fmt.Errorf("broker proxy: %w", err)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", broker)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return nil
}

// client reaches capture's metrics inside the capture namespace.
func (b *bench) client() *http.Client {
	if b.http == nil {
		b.http = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true, DisableCompression: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := vethlab.Do(b.lab.Rx, func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		}}
	}
	return b.http
}

var metricLine = regexp.MustCompile(`(?m)^(connpipe_capture_[a-z_]+)(\{[^}]*\})? ([0-9.e+]+)$`)

// metrics sums capture's counters by name.
func (b *bench) metrics() (map[string]float64, error) {
	resp, err := b.client().Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		out[m[1]] += v
	}
	return out, nil
}

func (b *bench) healthy() bool {
	resp, err := b.client().Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", metricsPort))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// vhost creates a broker virtual host for one run and returns its AMQP URL
// (through the proxy) and a function that deletes it.
func (b *bench) vhost(name string) (string, func(), error) {
	mgmt, err := url.Parse(b.o.mgmtURL)
	if err != nil {
		return "", nil, fmt.Errorf("-mgmt-url: %w", err)
	}
	amqpURL, err := url.Parse(b.o.amqpURL)
	if err != nil {
		return "", nil, fmt.Errorf("-amqp-url: %w", err)
	}
	user := mgmt.User.Username()
	pass, _ := mgmt.User.Password()
	call := func(method, path, body string) error {
		u := *mgmt
		u.User = nil
		req, err := http.NewRequest(method, strings.TrimRight(u.String(), "/")+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth(user, pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		return nil
	}
	vh := url.PathEscape(name)
	if err := call(http.MethodPut, "/api/vhosts/"+vh, ""); err != nil {
		return "", nil, fmt.Errorf("broker management API: %w", err)
	}
	del := func() { _ = call(http.MethodDelete, "/api/vhosts/"+vh, "") }
	if err := call(http.MethodPut, "/api/permissions/"+vh+"/"+url.PathEscape(amqpURL.User.Username()),
		`{"configure":".*","write":".*","read":".*"}`); err != nil {
		del()
		return "", nil, err
	}
	u := *amqpURL
	u.Host = fmt.Sprintf("127.0.0.1:%d", proxyPort)
	u.Path, u.RawPath = "/"+name, "/"+vh
	return u.String(), del, nil
}

// cpuTime is the CPU time of every thread of pid and the number of
// times one was scheduled in (schedstat's first and third fields).
func cpuTime(pid int) (time.Duration, uint64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, 0, fmt.Errorf("no threads of process %d", pid)
	}
	var (
		sum   time.Duration
		slots uint64
	)
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just ended
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		n, _ := strconv.ParseUint(f[2], 10, 64)
		sum += time.Duration(ns)
		slots += n
	}
	return sum, slots, nil
}

// runOne starts t in the capture namespace, offers n frames at rate, and
// returns what t saw and the rate the injector reached.
func (b *bench) runOne(ctx context.Context, t tool, n uint64, rate float64) (result, float64) {
	res := result{offered: n}
	var cmd *exec.Cmd
	var stderr bytes.Buffer
	filter := fmt.Sprintf("tcp dst port %d", port)
	if b.o.mirror {
		filter = fmt.Sprintf("udp dst port 4789 and dst host %s", mirrorDst)
	}
	if t.tcpdump {
		cmd = exec.Command("ip", append([]string{"netns", "exec", b.lab.Rx}, b.pinned(b.tcpdump, "-i", b.lab.RxIf, "-B", "8192", "-w", "/dev/null", filter)...)...)
		cmd.Stderr = &stderr
	} else {
		cmd = exec.Command("ip", append([]string{"netns", "exec", b.lab.Rx}, b.pinned(b.o.capture)...)...)
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"),
			"INTERFACE=" + b.lab.RxIf,
			fmt.Sprintf("LISTEN_ADDR=%s:%d", vethlab.DstIP, port),
			"OUTPUT=" + t.output,
			fmt.Sprintf("CAPTURE_WORKERS=%d", t.workers),
			fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", metricsPort),
			"LOG_FORMAT=text", "LOG_LEVEL=error",
		}
		if b.o.mirror {
			cmd.Env = append(cmd.Env, "DECAP=vxlan")
		}
		cmd.Env = append(cmd.Env, b.o.env...)
		if t.output == "amqp" {
			u, del, err := b.vhost(fmt.Sprintf("cpbench-%d-%d", os.Getpid(), time.Now().UnixNano()))
			if err != nil {
				res.err = err
				return res, 0
			}
			defer del()
			cmd.Env = append(cmd.Env, "AMQP_URL="+u)
		}
		cmd.Stderr = &stderr
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			res.err = err
			return res, 0
		}
		defer devnull.Close()
		cmd.Stdout = devnull
	}
	if err := cmd.Start(); err != nil {
		res.err = err
		return res, 0
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		sig := syscall.SIGTERM
		if t.tcpdump {
			sig = syscall.SIGINT
		}
		_ = cmd.Process.Signal(sig)
		select {
		case err := <-exited:
			return err
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("did not stop within 20s; killed")
		}
	}
	defer stop()

	// Ready: tcpdump says it is listening; capture answers /healthz
	// (with OUTPUT=amqp: connected to the broker).
	deadline := time.Now().Add(15 * time.Second)
	for {
		if time.Now().After(deadline) || ctx.Err() != nil {
			res.err = fmt.Errorf("not ready: %s", lastLine(stderr.String()))
			return res, 0
		}
		if t.tcpdump && strings.Contains(stderr.String(), "listening on") {
			break
		}
		if !t.tcpdump && b.healthy() {
			break
		}
		select {
		case err := <-exited:
			res.err = fmt.Errorf("exited: %v: %s", err, lastLine(stderr.String()))
			stopped = true
			return res, 0
		case <-time.After(50 * time.Millisecond):
		}
	}
	time.Sleep(200 * time.Millisecond) // let start-up work settle

	in, err := vethlab.NewInjector(b.lab.Tx, b.lab.TxIf, flows, port, b.o.injBatch)
	if err != nil {
		res.err = err
		return res, 0
	}
	defer in.Close()
	if b.o.mirror {
		in.WrapVXLAN(mirrorSrc, mirrorDst, mirrorVNI)
	}
	cpu0, wake0, err := cpuTime(cmd.Process.Pid)
	if err != nil {
		res.err = err
		return res, 0
	}
	if b.o.perf != "" && !t.tcpdump {
		out := filepath.Join(b.o.perf, strings.ReplaceAll(t.name, " ", "-")+fmt.Sprintf("-%.0f.data", rate))
		perf := exec.Command("perf", "record", "-F", "15000", "-g", "-o", out, "-p", strconv.Itoa(cmd.Process.Pid))
		if err := perf.Start(); err == nil {
			defer func() { _ = perf.Process.Signal(os.Interrupt); _ = perf.Wait() }()
		}
	}
	took, err := b.inject(in, n, rate)
	sentRate := float64(in.Sent()) / took.Seconds()
	if err != nil {
		res.err = fmt.Errorf("inject: %w", err)
		return res, sentRate
	}
	if !t.tcpdump && t.output == "amqp" {
		// Wait (a while) for the broker to confirm what was published.
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			m, err := b.metrics()
			if err == nil && m["connpipe_capture_packets_total"]+m["connpipe_capture_kernel_drops_total"] >= float64(n) &&
				m["connpipe_capture_records_confirmed_total"] >= m["connpipe_capture_records_total"] {
				break
			}
		}
	}
	time.Sleep(b.o.settle)
	cpu1, wake1, err := cpuTime(cmd.Process.Pid)
	if err != nil {
		res.err = err
		return res, sentRate
	}
	res.cpu, res.wakeups = cpu1-cpu0, wake1-wake0

	if t.tcpdump {
		err := stop()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			res.err = err
			return res, sentRate
		}
		res.records = statLine(stderr.String(), "packets captured")
		res.drops = statLine(stderr.String(), "packets dropped by kernel")
		return res, sentRate
	}
	m, err := b.metrics()
	if err != nil {
		res.err = fmt.Errorf("read metrics: %w", err)
		return res, sentRate
	}
	res.records = uint64(m["connpipe_capture_records_total"])
	res.drops = uint64(m["connpipe_capture_kernel_drops_total"])
	res.confirmed = uint64(m["connpipe_capture_records_confirmed_total"])
	if err := stop(); err != nil {
		res.err = fmt.Errorf("capture: %v: %s", err, lastLine(stderr.String()))
	}
	return res, sentRate
}

// inject runs the injector, on CPU 0 alone when -pin is set.
func (b *bench) inject(in *vethlab.Injector, n uint64, rate float64) (time.Duration, error) {
	if !b.o.pin {
		return in.Run(n, rate)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, zero unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return 0, fmt.Errorf("read the injector's CPUs: %w", err)
	}
	zero.Set(0)
	if err := unix.SchedSetaffinity(0, &zero); err != nil {
		return 0, fmt.Errorf("pin the injector to CPU 0: %w", err)
	}
	defer func() { _ = unix.SchedSetaffinity(0, &all) }()
	return in.Run(n, rate)
}

func statLine(s, what string) uint64 {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := sc.Text(); strings.HasSuffix(l, what) {
			n, _ := strconv.ParseUint(strings.Fields(l)[0], 10, 64)
			return n
		}
	}
	return 0
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
