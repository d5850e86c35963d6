package pipeline

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/testenv"
)

// viaProxy is the system's AMQP URL with its host replaced by a proxy
// in front of the broker.
func viaProxy(t *testing.T, amqpURL string) (*testenv.Proxy, string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, u.Host)
	u.Host = p.Addr
	return p, u.String()
}

// settled waits until the kernel counter has seen no new packet for
// 500 ms and returns how many it saw.
func settled(t *testing.T, k *kernelCounter) int {
	t.Helper()
	last, still := -1, 0
	waitFor(t, 10*time.Second, "the kernel counter settled", func() (bool, string) {
		n := len(k.snapshot())
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
		time.Sleep(100 * time.Millisecond)
		return still >= 5, fmt.Sprintf("%d packets", n)
	})
	return last
}

// duplicatesSkipped sums the running consumers' counts of records of a
// second delivery that were found stored already.
func (s *system) duplicatesSkipped() float64 {
	var n float64
	for _, c := range s.consumers {
		if c.alive() {
			n += metric(s.t, c.addr, "connpipe_consumer_duplicates_skipped_total")
		}
	}
	return n
}

// A broker whose confirms are lost, then gone; capture is killed with
// SIGKILL during the outage and started again while the broker is still
// away; then the broker comes back. The batches published while the
// confirms were lost reached the consumers and were stored, and are sent
// again from the spool: they are recognised and stored once. Redis ends
// with exactly the packets the kernel saw, each once, and the records
// skipped as duplicates are counted.
func TestKillDuringOutageStoresEveryRecordOnce(t *testing.T) {
	s := newSystem(t, nil)
	k := newKernelCounter(t, s.port)
	s.startConsumer("consumer-1")
	s.startConsumer("consumer-2")
	proxy, viaURL := viaProxy(t, s.amqp)
	s.capAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	spoolDir := t.TempDir()
	env := s.with(map[string]string{
		"AMQP_URL": viaURL, "INTERFACE": "lo", "LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", s.port), "SINK": "true",
		"METRICS_ADDR": s.capAddr, "SPOOL_DIR": spoolDir, "BATCH_SIZE": "32", "BATCH_INTERVAL": "50ms",
	})
	capture := start(t, "capture", "capture", env)
	waitFor(t, 20*time.Second, "capture healthy", func() (bool, string) { return healthy(s.capAddr), "healthz not ok" })

	// 1. The broker answers: stored and confirmed.
	traffic(t, s.port, 1, 20, 2)
	s.waitStored(k, false)

	// 2. Confirms are lost: the batches are stored but stay unconfirmed.
	proxy.Mute()
	traffic(t, s.port, 2, 20, 2)
	waitFor(t, 20*time.Second, "the unconfirmed batches stored", func() (bool, string) {
		a, b := s.storedAll()
		return len(a)+len(b) == len(k.snapshot()), fmt.Sprintf("%d stored of %d", len(a)+len(b), len(k.snapshot()))
	})
	resent := len(k.snapshot()) - int(metric(t, s.capAddr, "connpipe_capture_records_confirmed_total"))
	if resent <= 0 {
		t.Fatalf("every record was confirmed through a muted proxy: the test needs unconfirmed ones")
	}

	// 3. The broker is gone: new records and the unconfirmed ones go to
	// the spool; capture is killed, and started again with the broker
	// still away (no sink: the traffic is over).
	proxy.Cut()
	before := len(k.snapshot())
	traffic(t, s.port, 3, 20, 2)
	seen := settled(t, k)
	if seen <= before {
		t.Fatalf("the kernel saw no packet of the outage's traffic (%d before, %d after)", before, seen)
	}
	waitFor(t, 30*time.Second, "everything seen in the spool", func() (bool, string) {
		spooled := metric(t, s.capAddr, "connpipe_capture_spool_records")
		conf := metric(t, s.capAddr, "connpipe_capture_records_confirmed_total")
		return int(spooled+conf) == seen, fmt.Sprintf("spooled %.0f + confirmed %.0f of %d", spooled, conf, seen)
	})
	capture.kill9()
	env["SINK"] = "false"
	start(t, "capture-again", "capture", env)
	waitFor(t, 20*time.Second, "capture up again, holding its spool", func() (bool, string) {
		n, err := metrics(s.capAddr)
		return err == nil && n["connpipe_capture_spool_records"] > 0, "no spool records reported yet"
	})
	time.Sleep(2 * time.Second) // the broker stays away a while

	// 4. The broker is back: the spool drains.
	proxy.Restore(t)
	waitFor(t, 60*time.Second, "the spool drained and every packet stored once", func() (bool, string) {
		a, b := s.storedAll()
		spooled := metric(t, s.capAddr, "connpipe_capture_spool_records")
		return spooled == 0 && len(a)+len(b) >= seen, fmt.Sprintf("spool %.0f, stored %d of %d", spooled, len(a)+len(b), seen)
	})
	time.Sleep(time.Second) // anything still arriving would show as a duplicate
	a, b := s.storedAll()
	all := append(a, b...)
	sameAsKernel(t, k.snapshot(), all)
	distinct := map[string]int{}
	for _, r := range all {
		distinct[r.String()]++
	}
	if len(all) != len(distinct) || len(all) != seen {
		t.Fatalf("stored %d records, %d distinct, the kernel saw %d: want all three equal", len(all), len(distinct), seen)
	}
	skipped := s.duplicatesSkipped()
	if int(skipped) != resent {
		t.Fatalf("consumers skipped %.0f duplicates, want the %d records sent again", skipped, resent)
	}
	t.Logf("%d packets seen, %d stored, %d distinct; %d records sent twice, %.0f skipped as duplicates", seen, len(all), len(distinct), resent, skipped)
}
