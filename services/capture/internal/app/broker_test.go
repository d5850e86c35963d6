package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/samples"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
)

// TestReplayToBroker replays every sample capture with OUTPUT=amqp: the
// records in the conn.records queue are the golden lines, in order, and the
// confirmed counter matches.
func TestReplayToBroker(t *testing.T) {
	u := testenv.AMQP(t)
	var files []string
	var want []goldenLine
	for _, p := range samples.Captures(t) {
		if filepath.Base(p) == "eth-ipv4-cut-mid-record.pcap" {
			continue // ends the run with an error; covered by TestGoldenReplay
		}
		files = append(files, p)
		want = append(want, readGolden(t, filepath.Base(p))...)
	}
	clearEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL, cfg.PcapFiles, cfg.BPFFilter, cfg.MetricsAddr = u, files, "tcp", "127.0.0.1:0"
	cfg.BatchSize = 7 // several batches
	var info Info
	cfg.Ready = func(i Info) { info = i }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Run(ctx, cfg, testLogger(t)); err != nil {
		t.Fatalf("Run: %v", err)
	}

	ch := testenv.Channel(t, u)
	var got []string
	for {
		d, ok, err := ch.Get(topology.RecordsQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var b record.Batch
		if err := record.Decode(d.ContentType, d.Body, &b); err != nil {
			t.Fatal(err)
		}
		if len(b.Records) > cfg.BatchSize {
			t.Fatalf("batch of %d records, BATCH_SIZE is %d", len(b.Records), cfg.BatchSize)
		}
		for _, r := range b.Records {
			got = append(got, r.String())
		}
	}
	checkGolden(t, "all samples via the broker", got, want)
	if c := counter(t, info.Registry, "connpipe_capture_records_confirmed_total"); c != float64(len(got)) || c == 0 {
		t.Fatalf("records_confirmed_total %v, %d records in the queue", c, len(got))
	}
	if c := counter(t, info.Registry, "connpipe_capture_in_flight"); c != 0 {
		t.Fatalf("in_flight %v after Run", c)
	}
}

// TestUnhealthyWithoutBroker: with no broker, /healthz fails, and after
// the context ends Run gives up within SHUTDOWN_TIMEOUT, saying how many
// records it could not deliver.
func TestUnhealthyWithoutBroker(t *testing.T) {
	clearEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", freePort(t))
	cfg.PcapFiles = []string{filepath.Join(samples.Dir(t), "eth-ipv4-dns.pcap")}
	cfg.BPFFilter, cfg.MetricsAddr, cfg.ShutdownTimeout = "tcp", "127.0.0.1:0", 300*time.Millisecond
	info, cancel, runErr := start(t, cfg, discardLogger())
	defer cancel()
	time.Sleep(200 * time.Millisecond)
	resp, err := http.Get("http://" + info.MetricsAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz %s without a broker, want 503", resp.Status)
	}
	t0 := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err == nil || !strings.Contains(err.Error(), "11 records unconfirmed") {
			t.Fatalf("Run: %v, want 11 records unconfirmed", err)
		}
		if d := time.Since(t0); d > 3*time.Second {
			t.Fatalf("Run took %v after cancel with SHUTDOWN_TIMEOUT 300ms", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not give up")
	}
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	for range 100 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("capture never became healthy")
}
