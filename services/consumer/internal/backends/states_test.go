package backends

import (
	"context"
	"strconv"
	"strings"
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

// Ports of the servers these tests start themselves.
const (
	oomPort     = 6450
	replicaPort = 6451
	masterPort  = 6452
)

// storeRounds stores n rounds of 20 records and fails the test if any
// round does not finish.
func storeRounds(t *testing.T, s *Sink, n int, tag uint16, gap time.Duration) []record.Record {
	t.Helper()
	var all []record.Record
	for i := range n {
		now := time.Now().UnixNano()
		recs := gen(int(tag)*10000+i*20, 20, now, tag)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Store(ctx, []*record.Batch{{Ingest: now, Received: now, Records: recs}})
		cancel()
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		all = append(all, recs...)
		time.Sleep(gap)
	}
	return all
}

func count(t *testing.T, layout store.Layout, addr string, recs []record.Record) int {
	t.Helper()
	now := time.Now().Unix()
	return countTag(readAll(t, layout, addr, now-60, now+1), recs)
}

// outSink is a sink over own (weight 50) and a shared test server (weight
// 50) whose probes back off quickly.
func outSink(t *testing.T, own string) (*Sink, store.Layout, string) {
	shared := testenv.Redis(t, 1)[0]
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	tbl, err := control.NewTable([]control.Backend{{Name: "a", Addr: own, Weight: 50}, {Name: "b", Addr: shared, Weight: 50}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Layout: layout, Timeout: time.Second, CheckInterval: 100 * time.Millisecond, MaxProbeInterval: time.Second}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.RunChecker(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, layout, shared
}

// An instance at maxmemory changes state once, to oom, and stays out
// while it stays full (a PING would answer, a write does not): records go
// to the other instance. Once memory is freed a write probe succeeds and
// it is back.
func TestOOMIsAStateNotAFlap(t *testing.T) {
	own := redisproc.StartPort(t, oomPort, "--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	defer rdb.Close()
	ctx := testenv.Context(t, 60*time.Second)
	// A fresh redis-server already uses about 1 MB; if it still takes a
	// write, one 2 MB value takes it well past maxmemory (Redis checks the
	// limit before a write, so the write that crosses it is taken). From
	// then on it refuses every write, while PING still answers.
	if err := rdb.Set(ctx, "filler", strings.Repeat("f", 2<<20), 0).Err(); err != nil && redisconn.Classify(err) != redisconn.StateOOM {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "x", "1", 0).Err(); redisconn.Classify(err) != redisconn.StateOOM {
		t.Fatalf("write past maxmemory: %v, want OOM", err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING at maxmemory: %v", err)
	}
	s, layout, shared := outSink(t, own.Addr)
	recs := storeRounds(t, s, 30, 31, 100*time.Millisecond) // 3 s of rounds while full
	changes := func(state redisconn.State) float64 {
		return testutil.ToFloat64(s.m.StateChanges.WithLabelValues("a", state.String()))
	}
	st := s.States()["a"]
	t.Logf("after 3 s at maxmemory: state %s (%s), changes to oom %v, to up %v, write errors %v",
		st.State, st.Reason, changes(redisconn.StateOOM), changes(redisconn.StateUp), testutil.ToFloat64(s.m.WriteErrors.WithLabelValues("a")))
	if st.State != redisconn.StateOOM || changes(redisconn.StateOOM) != 1 || changes(redisconn.StateUp) != 0 || s.Up("a") {
		t.Fatalf("state %s, %v changes to oom, %v back up: want one change to oom and none back", st.State, changes(redisconn.StateOOM), changes(redisconn.StateUp))
	}
	if got := count(t, layout, shared, recs); got != len(recs) {
		t.Fatalf("%d of %d records on the other instance", got, len(recs))
	}

	// Give it room: flush it and raise maxmemory (an empty redis-server
	// alone uses about 0.9 of the 1 MB, too little for a 64 KiB round). The
	// next write probe puts it back.
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.Up("a") {
		if time.Now().After(deadline) {
			t.Fatalf("not back in rotation 10 s after its memory was freed: %+v", s.States()["a"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	more := storeRounds(t, s, 5, 32, 0)
	if got := count(t, layout, own.Addr, more); got == 0 || changes(redisconn.StateUp) != 1 {
		t.Fatalf("after re-admission: %d records on it, %v changes to up", got, changes(redisconn.StateUp))
	}
}

// A replica refuses writes: state readonly, once, until it is promoted.
func TestReadonlyIsAState(t *testing.T) {
	master := redisproc.StartPort(t, masterPort)
	own := redisproc.StartPort(t, replicaPort, "--replicaof", "127.0.0.1", strconv.Itoa(masterPort))
	_ = master
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	defer rdb.Close()
	ctx := testenv.Context(t, 60*time.Second)
	s, layout, shared := outSink(t, own.Addr)
	recs := storeRounds(t, s, 20, 41, 100*time.Millisecond)
	changes := func(state redisconn.State) float64 {
		return testutil.ToFloat64(s.m.StateChanges.WithLabelValues("a", state.String()))
	}
	if st := s.States()["a"]; st.State != redisconn.StateReadonly || changes(redisconn.StateReadonly) != 1 || changes(redisconn.StateUp) != 0 {
		t.Fatalf("replica: state %s (%s), %v changes to readonly, %v back up", st.State, st.Reason, changes(redisconn.StateReadonly), changes(redisconn.StateUp))
	}
	if got := count(t, layout, shared, recs); got != len(recs) {
		t.Fatalf("%d of %d records on the other instance", got, len(recs))
	}
	if err := rdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.Up("a") {
		if time.Now().After(deadline) {
			t.Fatalf("not back 10 s after promotion: %+v", s.States()["a"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// While the only instance of positive weight is out, records wait unacked
// — unless DrainedFallback lets them go to an instance of weight 0.
func TestDrainedFallback(t *testing.T) {
	own := redisproc.StartPort(t, oomPort+3)
	shared := testenv.Redis(t, 1)[0]
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	tbl, err := control.NewTable([]control.Backend{{Name: "a", Addr: own.Addr, Weight: 1}, {Name: "z", Addr: shared, Weight: 0}})
	if err != nil {
		t.Fatal(err)
	}
	for _, allow := range []bool{false, true} {
		s, err := New(Config{Layout: layout, Timeout: time.Second, CheckInterval: 100 * time.Millisecond, DrainedFallback: allow}, tbl)
		if err != nil {
			t.Fatal(err)
		}
		own.Kill()
		now := time.Now().UnixNano()
		recs := gen(int(now%1000)*100, 30, now, 51)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = s.Store(ctx, []*record.Batch{{Ingest: now, Received: now, Records: recs}})
		cancel()
		got := count(t, layout, shared, recs)
		t.Logf("DrainedFallback %v: Store %v, %d of %d records on the weight-0 instance", allow, err, got, len(recs))
		if allow && (err != nil || got != len(recs)) {
			t.Fatalf("with the fallback: Store %v, %d of %d stored on the drained instance", err, got, len(recs))
		}
		if !allow && (err == nil || got != 0) {
			t.Fatalf("without the fallback: Store %v, %d records on the drained instance", err, got)
		}
		s.Close()
		own.Restart()
	}
}
