package app

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/shared/config"
)

// clearEnv unsets every variable capture reads, so the defaults apply.
func clearEnv(t *testing.T) {
	for _, v := range config.Vars(Config{}) {
		v := v.Name
		t.Setenv(v, "") // restored after the test
		os.Unsetenv(v)
	}
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	c, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		AMQP: config.AMQP{AMQPURL: "amqp://guest:guest@127.0.0.1:5672/"}, Interface: "lo", ListenAddr: "127.0.0.1:7000",
		Output: "amqp", BatchSize: 512, BatchInterval: 50 * time.Millisecond, MaxInFlight: 256,
		Snaplen: 262144, RingBlockSize: 2 << 20, RingBlocks: 8, RingTimeout: 200 * time.Millisecond,
		Ops:             config.Ops{Metrics: config.Metrics{MetricsAddr: ":9100"}, Logging: config.Logging{LogLevel: "info", LogFormat: "auto"}},
		ShutdownTimeout: 10 * time.Second,
	}
	if c.AMQPURL != want.AMQPURL || c.Interface != want.Interface || c.ListenAddr != want.ListenAddr ||
		c.Output != want.Output || c.BatchSize != want.BatchSize || c.BatchInterval != want.BatchInterval ||
		c.MaxInFlight != want.MaxInFlight || c.Snaplen != want.Snaplen || c.RingBlockSize != want.RingBlockSize ||
		c.RingBlocks != want.RingBlocks || c.RingTimeout != want.RingTimeout || c.CaptureWorkers != 0 ||
		c.MetricsAddr != want.MetricsAddr || c.LogLevel != want.LogLevel || c.LogFormat != want.LogFormat ||
		c.ShutdownTimeout != want.ShutdownTimeout || c.Sink || c.BPFFilter != "" || len(c.PcapFiles) != 0 || c.ReplaySpeed != 0 {
		t.Fatalf("defaults %+v", c)
	}
	// The ring's defaults are written twice, in Config's tags and as the
	// source package's own for a zero LiveConfig: they must agree.
	if c.RingBlockSize != source.DefaultBlockSize || c.RingBlocks != source.DefaultBlocks || c.RingTimeout != source.DefaultBlockTimeout {
		t.Fatalf("ring defaults %d x %d, %s; package source's %d x %d, %s", c.RingBlocks, c.RingBlockSize, c.RingTimeout,
			source.DefaultBlocks, source.DefaultBlockSize, source.DefaultBlockTimeout)
	}
	f, _ := c.filter()
	if f.String() != "tcp and dst host 127.0.0.1 and dst port 7000" {
		t.Fatalf("default filter %q", f)
	}
}

func TestBadConfigNamesVariable(t *testing.T) {
	tests := []struct{ env, val, name string }{
		{"LISTEN_ADDR", "127.0.0.1", "LISTEN_ADDR"},
		{"LISTEN_ADDR", "localhost:80", "LISTEN_ADDR"},
		{"LISTEN_ADDR", "127.0.0.1:99999", "LISTEN_ADDR"},
		{"BATCH_SIZE", "0", "BATCH_SIZE"},
		{"BATCH_SIZE", "many", "BATCH_SIZE"},
		{"BATCH_INTERVAL", "soon", "BATCH_INTERVAL"},
		{"BATCH_INTERVAL", "0s", "BATCH_INTERVAL"},
		{"MAX_IN_FLIGHT", "0", "MAX_IN_FLIGHT"},
		{"OUTPUT", "kafka", "OUTPUT"},
		{"PCAP_FILES", "/nonexistent/file.pcap", "PCAP_FILES"},
		{"PCAP_FILES", "/", "PCAP_FILES"},
		{"BPF_FILTER", "udp port 53", "BPF_FILTER"},
		{"BPF_FILTER", "port 80 or port 443", "BPF_FILTER"},
		{"REPLAY_SPEED", "-1", "REPLAY_SPEED"},
		{"REPLAY_SPEED", "fast", "REPLAY_SPEED"},
		{"SNAPLEN", "10", "SNAPLEN"},
		{"SINK", "maybe", "SINK"},
		{"SHUTDOWN_TIMEOUT", "-1s", "SHUTDOWN_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.val, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tt.env, tt.val)
			_, err := LoadConfig(nil, io.Discard)
			if err == nil {
				t.Fatalf("%s=%q accepted", tt.env, tt.val)
			}
			if !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("error %q does not name %s", err, tt.name)
			}
		})
	}
}

// TestReplayFilterDefault: PCAP_FILES without BPF_FILTER or LISTEN_ADDR
// records every TCP packet; with LISTEN_ADDR set, that address's packets.
func TestReplayFilterDefault(t *testing.T) {
	http := filepath.Join(samples.Dir(t), "eth-ipv4-http-get.pcap")
	clearEnv(t)
	t.Setenv("PCAP_FILES", http)
	c, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := c.filter(); f.String() != "tcp" {
		t.Fatalf("filter %q, want tcp", f)
	}
	t.Setenv("LISTEN_ADDR", "192.150.187.43:80")
	c, err = LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := c.filter(); f.String() != "tcp and dst host 192.150.187.43 and dst port 80" {
		t.Fatalf("filter %q", f)
	}
}

// TestRunValidates: Run itself refuses a bad configuration.
func TestRunValidates(t *testing.T) {
	clearEnv(t)
	c, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c.BatchSize = 0
	if err := Run(context.Background(), c, testLogger(t)); err == nil || !strings.Contains(err.Error(), "BATCH_SIZE") {
		t.Fatalf("Run with BATCH_SIZE=0: %v", err)
	}
}

func TestFlags(t *testing.T) {
	dir := samples.Dir(t)
	http := filepath.Join(dir, "eth-ipv4-http-get.pcap")
	tests := []struct {
		args       []string
		wantErr    string
		filter     string
		output     string
		metrics    string
		files      int
		listenAddr string
	}{
		{args: []string{"-r", http}, filter: "tcp", output: "stdout", files: 1, listenAddr: "127.0.0.1:7000"},
		{args: []string{"-r", http + "," + http, "-f", "dst port 80"}, filter: "tcp and dst port 80", output: "stdout", files: 2, listenAddr: "127.0.0.1:7000"},
		{args: []string{"-r", http, "-listen", "192.150.187.43:80"}, filter: "tcp and dst host 192.150.187.43 and dst port 80", output: "stdout", files: 1, listenAddr: "192.150.187.43:80"},
		{args: []string{"-r", http, "-metrics", "127.0.0.1:0"}, filter: "tcp", output: "stdout", metrics: "127.0.0.1:0", files: 1, listenAddr: "127.0.0.1:7000"},
		{args: []string{"-listen", "0.0.0.0:8080", "-o", "stdout"}, filter: "tcp and dst port 8080", output: "stdout", metrics: ":9100", listenAddr: "0.0.0.0:8080"},
		{args: []string{"-r", http, "-f", "udp"}, wantErr: "-f"},
		{args: []string{"-listen", "nonsense"}, wantErr: "-listen"},
		{args: []string{"-r", "/nonexistent.pcap"}, wantErr: "PCAP_FILES"},
		{args: []string{"-r", ""}, wantErr: "-r"},
		{args: []string{"-o", "kafka"}, wantErr: "OUTPUT"},
		{args: []string{"-r", http, "dst", "port", "80"}, wantErr: "-f"},
		{args: []string{"-bogus"}, wantErr: "bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			clearEnv(t)
			c, err := LoadConfig(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f, _ := c.filter()
			if f.String() != tt.filter || c.Output != tt.output || c.MetricsAddr != tt.metrics || len(c.PcapFiles) != tt.files || c.ListenAddr != tt.listenAddr {
				t.Fatalf("config %+v (filter %q)", c, f)
			}
		})
	}
	var help strings.Builder
	if _, err := LoadConfig([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "capture -r FILE") {
		t.Fatalf("-h: %v\n%s", err, help.String())
	}
}
