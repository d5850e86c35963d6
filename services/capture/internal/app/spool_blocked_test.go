//go:build linux

package app

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/testenv"
)

func startPrivateRabbit(t *testing.T) *testenv.Rabbit {
	t.Helper()
	return testenv.StartRabbit(t, testenv.RabbitOptions{Name: "connpipe-spool", Port: privateAMQPPort})
}

// TestSpoolBlockedBroker raises a memory alarm on a node the test owns:
// the broker blocks capture's connection (connection.blocked), capture
// spools under live traffic, /healthz says why and the blocked gauge is 1.
// Once the alarm clears, the spool drains and the records stored equal the
// packets the raw socket saw.
func TestSpoolBlockedBroker(t *testing.T) {
	needRoot(t)
	rabbit := startPrivateRabbit(t)
	port := freePort(t)
	witness := startRawCounter(t, port)
	clearSpoolEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL = rabbit.URL()
	cfg.Interface, cfg.ListenAddr, cfg.Sink = "lo", fmt.Sprintf("127.0.0.1:%d", port), true
	cfg.MetricsAddr, cfg.SpoolDir = "127.0.0.1:0", t.TempDir()
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	waitHealthy(t, info.MetricsAddr)
	reg := info.Registry

	stop := traffic(t, cfg.ListenAddr, 2, time.Millisecond)
	time.Sleep(time.Second)
	if out, err := rabbit.Ctl("eval", "rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []})."); err != nil {
		t.Fatalf("raise memory alarm: %v\n%s", err, out)
	}
	waitFor(t, 15*time.Second, "capture never saw connection.blocked", func() bool {
		return counter(t, reg, "connpipe_capture_broker_blocked") == 1
	})
	waitFor(t, 10*time.Second, "nothing went to the spool while blocked", func() bool {
		return counter(t, reg, "connpipe_capture_spool_records") > 1000
	})
	code, body := healthz(t, info.MetricsAddr)
	if code != 503 || !strings.Contains(body, "blocked") || !strings.Contains(body, "memory") {
		t.Fatalf("/healthz while blocked: %d %q, want 503 naming the block and its reason", code, body)
	}
	t.Logf("/healthz while blocked: %d %s", code, strings.TrimSpace(body))
	if out, err := rabbit.Ctl("eval", "rabbit_alarm:clear_alarm({resource_limit, memory, node()})."); err != nil {
		t.Fatalf("clear memory alarm: %v\n%s", err, out)
	}
	time.Sleep(time.Second)
	stop()
	seen := settle(witness)
	waitFor(t, 60*time.Second, "the spool did not drain after the alarm cleared", func() bool {
		return counter(t, reg, "connpipe_capture_spool_records") == 0 && counter(t, reg, "connpipe_capture_spool_bytes") == 0 &&
			counter(t, reg, "connpipe_capture_broker_blocked") == 0 &&
			counter(t, reg, "connpipe_capture_packets_total") >= float64(len(seen))
	})
	if code, body := healthz(t, info.MetricsAddr); code != 200 {
		t.Fatalf("/healthz after the alarm: %d %q", code, body)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := counter(t, reg, "connpipe_capture_kernel_drops_total"); d != 0 {
		t.Fatalf("%v kernel drops", d)
	}
	stored, dups := dedupe(storedRecords(t, rabbit.URL()))
	if diff := diffMultiset(stored, seen); diff != "" {
		t.Fatal(diff)
	}
	t.Logf("%d packets seen, %d records stored (+%d duplicates), %.0f through the spool",
		len(seen), len(stored), dups, counter(t, reg, "connpipe_capture_spool_drained_records_total"))
}
