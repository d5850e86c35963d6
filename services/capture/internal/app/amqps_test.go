package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/testenv"
)

// Ports of this test's RabbitMQ node: AMQP, and its TLS listener.
const (
	amqpsNodePort = 5797
	amqpsTLSPort  = 5798
)

// TestReplayOverAMQPS: capture publishes over amqps:// to a TLS listener
// whose certificate was made by the test, trusting it through
// AMQP_CA_FILE, and every record is confirmed.
func TestReplayOverAMQPS(t *testing.T) {
	certs := testenv.NewCerts(t)
	testenv.StartTLSRabbit(t, "connpipe-capture-tls", amqpsNodePort, amqpsTLSPort, certs)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, certs.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	clearEnv(t)
	t.Setenv("AMQP_CA_FILE", ca)
	t.Cleanup(func() { _ = broker.UseCA("") })
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL = fmt.Sprintf("amqps://guest:guest@localhost:%d/", amqpsTLSPort)
	cfg.PcapFiles = []string{filepath.Join(samples.Dir(t), "eth-ipv4-dns.pcap")}
	cfg.BPFFilter, cfg.MetricsAddr = "tcp", "127.0.0.1:0"
	var info Info
	cfg.Ready = func(i Info) { info = i }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Run(ctx, cfg, testLogger(t)); err != nil {
		t.Fatalf("Run over amqps: %v", err)
	}
	if got := counter(t, info.Registry, "connpipe_capture_records_confirmed_total"); got != 11 {
		t.Fatalf("%v records confirmed over amqps, want the 11 of eth-ipv4-dns.pcap", got)
	}
}
