//go:build linux

package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const rabbitBin = "/usr/lib/rabbitmq/bin"

// privateRabbit is a RabbitMQ node of the test's own (node
// connpipe-spool@localhost, AMQP on privateAMQPPort, no management), so
// that it can raise alarms without disturbing other tests.
type privateRabbit struct {
	t   *testing.T
	dir string
	env []string
	cmd *exec.Cmd
	out bytes.Buffer
}

func startPrivateRabbit(t *testing.T) *privateRabbit {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rabbitBin, "rabbitmq-server")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("rabbitmq-server not installed (%v)", err)
		}
		t.Skipf("rabbitmq-server not installed at %s (scripts/testenv.sh up installs it)", rabbitBin)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", privateAMQPPort), time.Second); err == nil {
		c.Close()
		t.Fatalf("port %d is taken: a private node from an earlier run?", privateAMQPPort)
	}
	dir, err := os.MkdirTemp("", "connpipe-spool-rabbit-")
	if err != nil {
		t.Fatal(err)
	}
	r := &privateRabbit{t: t, dir: dir}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n"+
		"vm_memory_high_watermark.relative = 0.4\ndisk_free_limit.absolute = 50MB\n", privateAMQPPort)
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.env = append(os.Environ(),
		"HOME="+dir, // the Erlang cookie sits beside the data
		"RABBITMQ_NODENAME=connpipe-spool@localhost",
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", privateAMQPPort),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", privateDistPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
	)
	r.cmd = exec.Command(filepath.Join(rabbitBin, "rabbitmq-server"))
	r.cmd.Env, r.cmd.Stdout, r.cmd.Stderr = r.env, &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_, _ = r.ctl("stop")
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dir)
	})
	t0 := time.Now()
	for {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", privateAMQPPort), time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("private rabbitmq exited:\n%s", r.out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(t0) > 120*time.Second {
			t.Fatalf("private rabbitmq not up after 120s:\n%s", r.out.String())
		}
	}
	t.Logf("private rabbitmq node up after %s", time.Since(t0).Round(100*time.Millisecond))
	return r
}

// ctl runs rabbitmqctl against the node.
func (r *privateRabbit) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(rabbitBin, "rabbitmqctl"), args...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *privateRabbit) url() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", privateAMQPPort)
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
	cfg.AMQPURL = rabbit.url()
	cfg.Interface, cfg.ListenAddr, cfg.Sink = "lo", fmt.Sprintf("127.0.0.1:%d", port), true
	cfg.MetricsAddr, cfg.SpoolDir = "127.0.0.1:0", t.TempDir()
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	waitHealthy(t, info.MetricsAddr)
	reg := info.Registry

	stop := traffic(t, cfg.ListenAddr, 2, time.Millisecond)
	time.Sleep(time.Second)
	if out, err := rabbit.ctl("eval", "rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []})."); err != nil {
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
	if out, err := rabbit.ctl("eval", "rabbit_alarm:clear_alarm({resource_limit, memory, node()})."); err != nil {
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
	stored, dups := dedupe(storedRecords(t, rabbit.url()))
	if diff := diffMultiset(stored, seen); diff != "" {
		t.Fatal(diff)
	}
	t.Logf("%d packets seen, %d records stored (+%d duplicates), %.0f through the spool",
		len(seen), len(stored), dups, counter(t, reg, "connpipe_capture_spool_drained_records_total"))
}
