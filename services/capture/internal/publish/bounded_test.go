package publish

import (
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/spool"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBoundedRecordsQueue: conn.records is bounded to 1 MiB by the policy
// (as deployed, not by its declaration) while no consumer reads it. The
// broker nacks what does not fit; the publisher says it is rejected, the
// shipper spools the rest as during an outage, and the broker never blocks
// the connection (no alarm). Once a consumer reads the queue, the spool
// drains and every record arrives.
func TestBoundedRecordsQueue(t *testing.T) {
	u := testenv.AMQP(t)
	ch := testenv.Channel(t, u)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	testenv.Policy(t, u, topology.RecordsPolicyName, topology.RecordsPolicyPattern, topology.RecordsPolicy(1<<20))
	reg := prometheus.NewRegistry()
	sm := spool.NewMetrics(reg)
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), MaxBytes: 1 << 30, Metrics: sm})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	pm := NewMetrics(reg)
	pub := NewPublisher(PublisherConfig{URL: u, Name: "capture-test-bounded", MaxInFlight: 16, Logger: testLogger(t), Metrics: pm})
	sh := NewShipper(ShipperConfig{Spool: sp, Publisher: pub, Logger: testLogger(t), Metrics: NewShipperMetrics(reg, sm.Drained)})
	ctx := testenv.Context(t, 3*time.Minute)
	b := NewBatcher(ctx, 512, 20*time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx, b.Out()) }()

	const n = 120_000 // several MiB of batches: far over the bound
	blocked := false
	for i := range n {
		if err := b.Add(ctx, rec(i%60000)); err != nil {
			t.Fatal(err)
		}
		if bl, _ := pub.Blocked(); bl {
			blocked = true
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		rejected, _ := pub.Rejecting()
		if rejected && sp.Stats().Records > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rejection with records spooled: rejecting %v, spool %+v, nacked %v", rejected, sp.Stats(), testutil.ToFloat64(pm.Nacked))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("queue full: %v batches nacked, spool %+v", testutil.ToFloat64(pm.Nacked), sp.Stats())

	// Consumers come back: read the queue until every record arrived.
	got := 0
	deadline = time.Now().Add(2 * time.Minute)
	for got < n {
		d, ok, err := ch.Get(topology.RecordsQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if bl, _ := pub.Blocked(); bl {
			blocked = true
		}
		if !ok {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d records arrived; spool %+v", got, n, sp.Stats())
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		var bt record.Batch
		if err := record.DecodeBinary(d.Body, &bt); err != nil {
			t.Fatal(err)
		}
		got += len(bt.Records)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("shipper: %v", err)
	}
	if got != n || testutil.ToFloat64(pm.Confirmed) != n || sp.Stats().Records != 0 {
		t.Errorf("%d records arrived, %v confirmed, %d left in the spool; want %d, %d, 0", got, testutil.ToFloat64(pm.Confirmed), sp.Stats().Records, n, n)
	}
	if rejected, _ := pub.Rejecting(); rejected {
		t.Errorf("still rejecting after the queue drained")
	}
	if blocked {
		t.Errorf("the broker blocked the connection (a resource alarm)")
	}
}
