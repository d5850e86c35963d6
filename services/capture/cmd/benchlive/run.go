//go:build linux

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
)

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
	b, cleanup, err := setup(ctx, o)
	if err != nil {
		return err
	}
	defer cleanup()
	tools := o.tools()
	if err := b.header(); err != nil {
		return err
	}
	for _, rate := range o.rates {
		n := o.maxN
		if rate > 0 {
			n = min(max(uint64(rate*o.seconds), o.minN), o.maxN)
		}
		rounds, err := b.rounds(ctx, tools, n, rate)
		if err != nil {
			return err
		}
		printRate(rate, tools, rounds)
	}
	return nil
}

// setup checks what the bench needs, builds capture unless -capture names
// it, and creates the namespaces (and the broker proxy for OUTPUT=amqp);
// cleanup removes what it made.
func setup(ctx context.Context, o options) (b *bench, cleanup func(), err error) {
	if os.Geteuid() != 0 {
		return nil, nil, errors.New("needs root: it creates network namespaces and opens AF_PACKET sockets")
	}
	tcpdump, err := exec.LookPath(o.tcpdump)
	if err != nil {
		return nil, nil, fmt.Errorf("tcpdump is needed (apt-get install tcpdump): %w", err)
	}
	tmp, err := os.MkdirTemp("", "benchlive")
	if err != nil {
		return nil, nil, err
	}
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	undo = append(undo, func() { os.RemoveAll(tmp) })
	if o.capture == "" {
		o.capture = filepath.Join(tmp, "capture")
		build := exec.Command("go", "build", "-o", o.capture, "github.com/connpipe/connpipe/services/capture")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("build capture: %v\n%s", err, out)
		}
	}
	lab, err := vethlab.New(fmt.Sprintf("cpbench-%d", os.Getpid()))
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() {
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "benchlive: remove namespaces:", err)
		}
	})
	b = &bench{o: o, lab: lab, tcpdump: tcpdump, frameLen: vethlab.FrameLen}
	if o.mirror {
		if out, err := exec.Command("ip", "-n", lab.Rx, "addr", "add", mirrorDst.String()+"/24", "dev", lab.RxIf).CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("ip addr add: %v: %s", err, out)
		}
		b.frameLen = vethlab.VXLANLen
	}
	if o.amqp {
		if err := b.startProxy(ctx); err != nil {
			return nil, nil, err
		}
	}
	return b, cleanup, nil
}

// tools are the contenders: tcpdump, capture to stdout with each -workers
// value, and capture to the broker with the largest.
func (o options) tools() []tool {
	tools := []tool{{name: "tcpdump", tcpdump: true}}
	for _, w := range o.workers {
		tools = append(tools, tool{name: fmt.Sprintf("capture stdout w=%d", w), workers: w, output: "stdout"})
	}
	if o.amqp {
		w := o.workers[len(o.workers)-1]
		tools = append(tools, tool{name: fmt.Sprintf("capture amqp w=%d", w), workers: w, output: "amqp"})
	}
	return tools
}

// row is the layout of the table's lines.
const row = "%7s %8s %8s  %-20s %9s %9s %9s %10s %10s %11s %8s\n"

// header prints what is measured, and how, and the table's head.
func (b *bench) header() error {
	o := b.o
	fmt.Printf("live capture beside tcpdump: frames of %d bytes in %d flows over a veth pair (%s -> %s), %d CPUs\n",
		b.frameLen, flows, b.lab.TxIf, b.lab.RxIf, numCPU())
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
	fmt.Printf(row, "rate", "offered", "sent/s", "tool", "records", "drops", "confirmed", "CPU µs/pkt", "vs tcpdump", "range", "wakeups")
	return nil
}

// rounds runs every tool -repeat times at rate, n frames each time. Every
// tool runs once a round, so a drift of the machine weighs on all of them
// alike.
func (b *bench) rounds(ctx context.Context, tools []tool, n uint64, rate float64) ([][]round, error) {
	rounds := make([][]round, len(tools))
	for range b.o.repeat {
		for i, t := range tools {
			if !t.tcpdump && !strings.Contains(t.name, b.o.only) {
				continue
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			res, sentRate := b.runOne(ctx, t, n, rate)
			rounds[i] = append(rounds[i], round{res: res, sent: sentRate})
		}
	}
	return rounds, nil
}

// printRate prints a row per tool that ran at rate; tcpdump's rounds come
// first and are the reference.
func printRate(rate float64, tools []tool, rounds [][]round) {
	rateName := "max"
	if rate > 0 {
		rateName = strconv.FormatFloat(rate, 'f', 0, 64)
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
