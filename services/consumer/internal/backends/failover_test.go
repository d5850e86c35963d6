package backends

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/redisproc"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// A SENTINEL FAILOVER under load is a wait, not an outage: the backend
// goes to failover once and back once, its records wait and are stored on
// the new primary, and with REDIS_MIN_REPLICAS=1 every record acked is
// readable there afterwards.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	sentinels, master := testenv.Sentinels(t)
	before := testenv.SentinelPrimary(t, sentinels[0], master)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: 2 * time.Minute}
	addr := "sentinel://" + strings.Join(sentinels, ",") + "/" + master
	tbl, err := control.NewTable([]control.Backend{{Name: "ha", Addr: addr, Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Layout: layout, Timeout: time.Second, CheckInterval: 100 * time.Millisecond, MaxProbeInterval: time.Second,
		FailoverWait: 30 * time.Second, MinReplicas: 1, ReplicaTimeout: 500 * time.Millisecond}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.RunChecker(ctx) })
	var mu sync.Mutex
	var acked []record.Record
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			now := time.Now().UnixNano()
			recs := gen(i*50, 50, now, 7)
			sctx, scancel := context.WithTimeout(ctx, 40*time.Second)
			err := s.Store(sctx, []*record.Batch{{Ingest: now, Received: now, Records: recs}})
			scancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, recs...)
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	storedOK := func(n int) bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= n }
	waitFor(t, 10*time.Second, "records stored before the failover", func() bool { return storedOK(500) })

	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0]})
	defer sc.Close()
	if err := sc.Failover(testenv.Context(t, 5*time.Second), master).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, 30*time.Second, "a new primary", func() bool { return testenv.SentinelPrimary(t, sentinels[0], master) != before })
	changes := func(st redisconn.State) float64 {
		return testutil.ToFloat64(s.m.StateChanges.WithLabelValues("ha", st.String()))
	}
	waitFor(t, 30*time.Second, "the backend back up after its failover", func() bool {
		return changes(redisconn.StateFailover) >= 1 && s.States()["ha"].State == redisconn.StateUp
	})
	mu.Lock()
	mark := len(acked)
	mu.Unlock()
	waitFor(t, 10*time.Second, "records stored after the failover", func() bool { return storedOK(mark + 500) })
	cancel()
	wg.Wait()

	for _, st := range redisconn.ConsumerStates() {
		want := 0.0
		if st == redisconn.StateFailover || st == redisconn.StateUp {
			want = 1
		}
		if got := changes(st); got != want {
			t.Errorf("%v changes to %s, want %v (one to failover and one back, no flapping)", got, st, want)
		}
	}
	after := testenv.SentinelPrimary(t, sentinels[0], master)
	now := time.Now().Unix()
	held := readAll(t, layout, after, now-120, now+1)
	missing := 0
	for i := range acked {
		if held[acked[i].String()] == 0 {
			missing++
		}
	}
	t.Logf("primary %s → %s; %d records acked, %d of them missing on the new primary", before, after, len(acked), missing)
	if missing > 0 || len(acked) == 0 {
		t.Fatalf("%d of %d acked records missing on the new primary %s", missing, len(acked), after)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With REDIS_MIN_REPLICAS=1, a write to an instance that has no replica is
// not acked: Store keeps the records (the caller does not ack them) and
// the backend leaves rotation as unreplicated, with its reason.
func TestUnreplicatedWriteIsNotAcked(t *testing.T) {
	own := redisproc.Start(t)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	tbl, err := control.NewTable([]control.Backend{{Name: "lonely", Addr: own.Addr, Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Layout: layout, Timeout: time.Second, MinReplicas: 1, ReplicaTimeout: 100 * time.Millisecond}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UnixNano()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = s.Store(ctx, []*record.Batch{{Ingest: now, Received: now, Records: gen(0, 20, now, 7), ID: record.ID{Producer: 9, Seq: 1}}})
	if err == nil {
		t.Fatal("Store acked a write that no replica confirmed")
	}
	st := s.States()["lonely"]
	if st.State != redisconn.StateUnreplicated || !strings.Contains(st.Reason, "replicas") {
		t.Fatalf("state %v (%q), want unreplicated naming the replicas", st.State, st.Reason)
	}
	if got := s.Stored(); got != 0 {
		t.Fatalf("%d records counted stored", got)
	}
}
