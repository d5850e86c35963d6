//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
	"github.com/connpipe/connpipe/shared/testenv"
)

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

// bench is the lab the tools run in and the settings they run with.
type bench struct {
	o        options
	lab      *vethlab.Lab
	tcpdump  string
	frameLen int // bytes of each frame offered
	http     *http.Client
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
	amqpURL, err := url.Parse(b.o.amqpURL)
	if err != nil {
		return "", nil, fmt.Errorf("-amqp-url: %w", err)
	}
	call := func(method, path, body string) error {
		return testenv.ManagementCall(b.o.mgmtURL, method, path, body)
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
