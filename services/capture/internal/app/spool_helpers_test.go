package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/logging"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// childEnv, when "1", makes the test binary run as the capture command
// (configured by the environment), so tests can kill a real process.
const childEnv = "CONNPIPE_CAPTURE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// childMain is main.go's body.
func childMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := LoadConfig(nil, os.Stderr)
	log, lerr := logging.New(os.Stderr, cfg.LogLevel, "text")
	if err = errors.Join(err, lerr); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		return 2
	}
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("capture stopped", "err", err)
		return 1
	}
	return 0
}

// clearSpoolEnv unsets every variable capture reads, spool ones included.
func clearSpoolEnv(t *testing.T) {
	clearEnv(t)
	for _, v := range []string{"SPOOL_DIR", "SPOOL_MAX_BYTES", "SPOOL_FULL_POLICY", "SPOOL_FSYNC", "KEY_RULE"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
}

// startProxy puts a TCP proxy of the test's own on 127.0.0.1:port in front
// of the broker at target, to cut and restore.
func startProxy(t *testing.T, port int, target string) *testenv.Proxy {
	t.Helper()
	return testenv.NewProxyAt(t, fmt.Sprintf("127.0.0.1:%d", port), target)
}

// via rewrites an AMQP URL to go through addr.
func via(t *testing.T, amqpURL, addr string) string {
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// traffic sends small writes to addr from conns connections, each write
// about every interval (TCP_NODELAY: one segment each), reconnecting every
// 400 writes so SYNs and FINs are in the mix too. Each connection writes
// its own payload size. stop waits for the senders to finish.
func traffic(t *testing.T, addr string, conns int, interval time.Duration) (stop func() int64) {
	var (
		quit   atomic.Bool
		writes atomic.Int64
		wg     sync.WaitGroup
	)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 8+i*13)
			for !quit.Load() {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				tick := time.NewTicker(interval)
				for n := 0; n < 400 && !quit.Load(); n++ {
					<-tick.C
					if _, err := c.Write(payload); err != nil {
						break
					}
					writes.Add(1)
				}
				tick.Stop()
				c.Close()
			}
		}()
	}
	return func() int64 {
		quit.Store(true)
		wg.Wait()
		return writes.Load()
	}
}

// storedRecords takes every message off the records queue at amqpURL and
// returns its records.
func storedRecords(t *testing.T, amqpURL string) []record.Record {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var out []record.Record
	for {
		d, ok, err := ch.Get(topology.RecordsQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		var b record.Batch
		if err := record.Decode(d.ContentType, d.Body, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Records...)
	}
}

// witnessKey is a record in the raw counter's form.
func witnessKey(r *record.Record) string {
	return fmt.Sprintf("%s %d %d 0x%04x %d", r.Src, r.SrcPort, r.DstPort, r.Flags, r.IPLen)
}

// dedupe drops exact copies (same capture timestamp and fields): the
// batches at-least-once delivery sent twice.
func dedupe(recs []record.Record) (uniq []record.Record, dups int) {
	seen := make(map[string]bool, len(recs))
	for _, r := range recs {
		k := r.String()
		if seen[k] {
			dups++
			continue
		}
		seen[k] = true
		uniq = append(uniq, r)
	}
	return uniq, dups
}

// diffMultiset compares the records with the witness's packets, as
// multisets, and describes the difference ("" when equal).
func diffMultiset(recs []record.Record, witness []string) string {
	count := map[string]int{}
	for _, w := range witness {
		count[w]++
	}
	for i := range recs {
		count[witnessKey(&recs[i])]--
	}
	var missing, extra []string
	for k, n := range count {
		for ; n > 0; n-- {
			missing = append(missing, k)
		}
		for ; n < 0; n++ {
			extra = append(extra, k)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("%d records, %d packets seen: %d seen but not stored (first %v), %d stored but not seen (first %v)",
		len(recs), len(witness), len(missing), head(missing), len(extra), head(extra))
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// settle waits until the witness has seen no new packet for a second: on
// a loaded machine its reader can stall for a few hundred milliseconds
// with packets still queued on its socket.
func settle(w *rawCounter) []string {
	var last []string
	still := 0
	for range 150 {
		time.Sleep(200 * time.Millisecond)
		cur := w.packets()
		if len(cur) == len(last) && len(cur) > 0 {
			if still++; still == 5 {
				return cur
			}
		} else {
			still = 0
		}
		last = cur
	}
	return last
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// healthz returns /healthz's status code and body.
func healthz(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads one metric (summed over its labels) from a /metrics page.
func scrape(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total, found := 0.0, false
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q", l)
		}
		total += v
		found = true
	}
	if !found {
		t.Fatalf("metric %s not on /metrics", name)
	}
	return total
}

// outageDuration is how long the proxy tests cut the broker off:
// CONNPIPE_SPOOL_OUTAGE (a Go duration; the figure is 60s), 15s by
// default to keep the package's tests short.
func outageDuration(t *testing.T) time.Duration {
	if v := os.Getenv("CONNPIPE_SPOOL_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("CONNPIPE_SPOOL_OUTAGE=%q: want a positive duration", v)
		}
		return d
	}
	return 15 * time.Second
}
