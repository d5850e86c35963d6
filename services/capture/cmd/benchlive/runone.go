//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
	"golang.org/x/sys/unix"
)

// proc is one tool running in the capture namespace.
type proc struct {
	t       tool
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	exited  chan error
	stopped bool
	undo    []func()
}

// runOne starts t in the capture namespace, offers n frames at rate, and
// returns what t saw and the rate the injector reached.
func (b *bench) runOne(ctx context.Context, t tool, n uint64, rate float64) (result, float64) {
	res := result{offered: n}
	p, err := b.start(t)
	if p != nil {
		defer p.close()
	}
	if err != nil {
		res.err = err
		return res, 0
	}
	if err := p.ready(ctx, b); err != nil {
		res.err = err
		return res, 0
	}
	time.Sleep(200 * time.Millisecond) // let start-up work settle
	sentRate, err := b.offer(p, n, rate, &res)
	if err != nil {
		res.err = err
		return res, sentRate
	}
	res.err = b.count(p, &res)
	return res, sentRate
}

// start starts t: tcpdump with the same filter as capture, or capture
// with OUTPUT=stdout to /dev/null or OUTPUT=amqp to a virtual host of its
// own. close undoes what start did, whether it failed or not.
func (b *bench) start(t tool) (*proc, error) {
	p := &proc{t: t, exited: make(chan error, 1)}
	filter := fmt.Sprintf("tcp dst port %d", port)
	if b.o.mirror {
		filter = fmt.Sprintf("udp dst port 4789 and dst host %s", mirrorDst)
	}
	if t.tcpdump {
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", b.lab.Rx}, b.pinned(b.tcpdump, "-i", b.lab.RxIf, "-B", "8192", "-w", "/dev/null", filter)...)...)
	} else {
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", b.lab.Rx}, b.pinned(b.o.capture)...)...)
		if err := b.captureEnv(p); err != nil {
			return p, err
		}
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return p, err
		}
		p.undo = append(p.undo, func() { devnull.Close() })
		p.cmd.Stdout = devnull
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		p.stopped = true
		return p, err
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// captureEnv is capture's environment for p's tool.
func (b *bench) captureEnv(p *proc) error {
	p.cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"INTERFACE=" + b.lab.RxIf,
		fmt.Sprintf("LISTEN_ADDR=%s:%d", vethlab.DstIP, port),
		"OUTPUT=" + p.t.output,
		fmt.Sprintf("CAPTURE_WORKERS=%d", p.t.workers),
		fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", metricsPort),
		"LOG_FORMAT=text", "LOG_LEVEL=error",
	}
	if b.o.mirror {
		p.cmd.Env = append(p.cmd.Env, "DECAP=vxlan")
	}
	p.cmd.Env = append(p.cmd.Env, b.o.env...)
	if p.t.output == "amqp" {
		u, del, err := b.vhost(fmt.Sprintf("cpbench-%d-%d", os.Getpid(), time.Now().UnixNano()))
		if err != nil {
			return err
		}
		p.undo = append(p.undo, del)
		p.cmd.Env = append(p.cmd.Env, "AMQP_URL="+u)
	}
	return nil
}

// stop ends the tool (tcpdump prints its counts on SIGINT) and waits for
// it, killing it after 20 s.
func (p *proc) stop() error {
	if p.stopped || p.cmd.Process == nil {
		return nil
	}
	p.stopped = true
	sig := syscall.SIGTERM
	if p.t.tcpdump {
		sig = syscall.SIGINT
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.exited:
		return err
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New("did not stop within 20s; killed")
	}
}

// close stops the tool and undoes what start did.
func (p *proc) close() {
	_ = p.stop()
	for i := len(p.undo) - 1; i >= 0; i-- {
		p.undo[i]()
	}
}

// ready waits until tcpdump says it is listening, or capture answers
// /healthz (with OUTPUT=amqp: connected to the broker).
func (p *proc) ready(ctx context.Context, b *bench) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready: %s", lastLine(p.stderr.String()))
		}
		if p.t.tcpdump && strings.Contains(p.stderr.String(), "listening on") {
			return nil
		}
		if !p.t.tcpdump && b.healthy() {
			return nil
		}
		select {
		case err := <-p.exited:
			p.stopped = true
			return fmt.Errorf("exited: %v: %s", err, lastLine(p.stderr.String()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// offer injects n frames at rate and takes the tool's CPU time and
// wake-ups from just before the first frame until the tool has processed
// the last (with OUTPUT=amqp, until the broker confirmed it, within 30 s)
// and -settle more. It returns the rate the injector reached.
func (b *bench) offer(p *proc, n uint64, rate float64, res *result) (float64, error) {
	in, err := vethlab.NewInjector(b.lab.Tx, b.lab.TxIf, flows, port, b.o.injBatch)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	if b.o.mirror {
		in.WrapVXLAN(mirrorSrc, mirrorDst, mirrorVNI)
	}
	pid := p.cmd.Process.Pid
	cpu0, wake0, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	if b.o.perf != "" && !p.t.tcpdump {
		out := filepath.Join(b.o.perf, strings.ReplaceAll(p.t.name, " ", "-")+fmt.Sprintf("-%.0f.data", rate))
		perf := exec.Command("perf", "record", "-F", "15000", "-g", "-o", out, "-p", strconv.Itoa(pid))
		if err := perf.Start(); err == nil {
			defer func() { _ = perf.Process.Signal(os.Interrupt); _ = perf.Wait() }()
		}
	}
	took, err := b.inject(in, n, rate)
	sentRate := float64(in.Sent()) / took.Seconds()
	if err != nil {
		return sentRate, fmt.Errorf("inject: %w", err)
	}
	if !p.t.tcpdump && p.t.output == "amqp" {
		b.waitConfirmed(n)
	}
	time.Sleep(b.o.settle)
	cpu1, wake1, err := cpuTime(pid)
	if err != nil {
		return sentRate, err
	}
	res.cpu, res.wakeups = cpu1-cpu0, wake1-wake0
	return sentRate, nil
}

// waitConfirmed waits (a while) for the broker to confirm what capture
// published of n frames.
func (b *bench) waitConfirmed(n uint64) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		m, err := b.metrics()
		if err == nil && m["connpipe_capture_packets_total"]+m["connpipe_capture_kernel_drops_total"] >= float64(n) &&
			m["connpipe_capture_records_confirmed_total"] >= m["connpipe_capture_records_total"] {
			return
		}
	}
}

// count fills in the records and drops the tool counted: tcpdump's from
// the lines it prints when it stops, capture's from its metrics.
func (b *bench) count(p *proc, res *result) error {
	if p.t.tcpdump {
		err := p.stop()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return err
		}
		res.records = statLine(p.stderr.String(), "packets captured")
		res.drops = statLine(p.stderr.String(), "packets dropped by kernel")
		return nil
	}
	m, err := b.metrics()
	if err != nil {
		return fmt.Errorf("read metrics: %w", err)
	}
	res.records = uint64(m["connpipe_capture_records_total"])
	res.drops = uint64(m["connpipe_capture_kernel_drops_total"])
	res.confirmed = uint64(m["connpipe_capture_records_confirmed_total"])
	if err := p.stop(); err != nil {
		return fmt.Errorf("capture: %v: %s", err, lastLine(p.stderr.String()))
	}
	return nil
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
