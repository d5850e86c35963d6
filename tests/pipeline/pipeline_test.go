package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// waitStored waits until Redis holds exactly as many records as the
// kernel counter saw packets, and capture has confirmed them all.
func (s *system) waitStored(k *kernelCounter, atLeast bool) (a, b []record.Record) {
	s.t.Helper()
	// The condition must hold on two reads 300 ms apart, so packets still
	// in the counter's socket buffer or in a batch cannot slip past.
	held := 0
	waitFor(s.t, 60*time.Second, "every packet stored", func() (bool, string) {
		want := len(k.snapshot())
		a, b = s.storedAll()
		got := len(a) + len(b)
		conf := metric(s.t, s.capAddr, "connpipe_capture_records_confirmed_total")
		state := fmt.Sprintf("kernel %d, confirmed %.0f, stored %d", want, conf, got)
		ok := want > 0 && got == want && int(conf) == want
		if atLeast {
			ok = want > 0 && got >= want && int(conf) >= want
		}
		if !ok {
			held = 0
			return false, state
		}
		held++
		if held < 2 {
			time.Sleep(300 * time.Millisecond)
			return false, state
		}
		return true, state
	})
	return a, b
}

func TestLiveCaptureSplitsExactlyAndFollowsRuntimeChange(t *testing.T) {
	s := newSystem(t, nil)
	k := newKernelCounter(t, s.port)
	s.startAdmin()
	c1 := s.startConsumer("consumer-1")
	c2 := s.startConsumer("consumer-2")
	s.startCapture()

	// 1. 60 loopback sources, 3 connections each.
	traffic(t, s.port, 1, 60, 3)
	a, b := s.waitStored(k, false)
	sameAsKernel(t, k.snapshot(), append(a, b...))
	sources := map[string]bool{}
	for _, r := range append(a, b...) {
		sources[r.Src.String()] = true
	}
	if len(sources) < 50 {
		t.Fatalf("records from %d source IPs, want at least 50", len(sources))
	}
	if d := k.drops(); d != 0 {
		t.Fatalf("the test's own counter lost %d packets; the comparison is void", d)
	}
	// The capture's stream is split exactly, whichever consumer stored
	// which batch: each record goes by its place in the stream.
	exact(t, "the capture's stream at 30/70", float64(len(a)), float64(len(b)), 30, 70)
	var perConsumer float64
	for _, c := range []*consumer{c1, c2} {
		ca, cb := c.split(t)
		perConsumer += ca + cb
	}
	if int(perConsumer) != len(a)+len(b) {
		t.Fatalf("consumers report %v records stored, Redis holds %d", perConsumer, len(a)+len(b))
	}
	t.Logf("phase 1: %d records, redis-a %d, redis-b %d (%.1f%% / %.1f%%)", len(a)+len(b), len(a), len(b),
		100*float64(len(a))/float64(len(a)+len(b)), 100*float64(len(b))/float64(len(a)+len(b)))

	// 2. Change to 50/50 with the CLI and wait for every consumer to apply it.
	out, err := s.cli("weights", "set", "redis-a=50", "redis-b=50", "--wait", "10s")
	if err != nil {
		t.Fatalf("admin weights set: %v\n%s", err, out)
	}
	for _, c := range []*consumer{c1, c2} {
		if v := metric(t, c.addr, "connpipe_consumer_control_version"); v != 1 {
			t.Fatalf("%s at control version %v after --wait returned, want 1", c.name, v)
		}
	}
	a1, b1 := len(a), len(b)
	traffic(t, s.port, 2, 60, 3)
	a, b = s.waitStored(k, false)
	exact(t, "the capture's stream after 50/50", float64(len(a)-a1), float64(len(b)-b1), 50, 50)
	a2, b2 := len(a), len(b)

	// A consumer started after the change routes its first record by 50/50.
	c3 := s.startConsumer("consumer-3")
	if v := metric(t, c3.addr, "connpipe_consumer_control_version"); v != 1 {
		t.Fatalf("late consumer at control version %v, want 1", v)
	}
	for round := 4; round < 12; round++ {
		traffic(t, s.port, round, 40, 2)
		if ca, cb := c3.split(t); ca+cb >= 40 {
			break
		}
	}
	a, b = s.waitStored(k, false)
	if ca, cb := c3.split(t); ca == 0 || cb == 0 {
		t.Errorf("late consumer-3 stored %v on redis-a and %v on redis-b, want both", ca, cb)
	}
	exact(t, "the capture's stream with consumer-3 too", float64(len(a)-a2), float64(len(b)-b2), 50, 50)
	sameAsKernel(t, k.snapshot(), append(a, b...))

	out, err = s.cli("weights", "get")
	if err != nil || !strings.Contains(out, "redis-a") || !strings.Contains(out, "50") {
		t.Fatalf("admin weights get: %v\n%s", err, out)
	}
}

func TestBadInputLeavesWeightsAndConsumersAlone(t *testing.T) {
	s := newSystem(t, nil)
	s.startAdmin()
	c := s.startConsumer("consumer-1")

	ch := testenv.Channel(t, s.amqp)
	pub := func(exchange, key, ct, body string) {
		t.Helper()
		testenv.Publish(t, ch, exchange, key, amqp.Publishing{ContentType: ct, Body: []byte(body)})
	}
	for _, body := range []string{
		`{"op":"set_weights","weights":{"redis-a":`,
		`{"op":"set_weights","weights":{"redis-z":10}}`,
		`{"op":"set_weights","weights":{"redis-a":300}}`,
		`{"op":"set_weights","weights":{"redis-a":0,"redis-b":0}}`,
	} {
		pub("", topology.ControlStream, "application/json", body)
	}
	pub(topology.RecordsExchange, "", record.ContentTypeBinary, "CPRB\x01\x00\x00\x00\x05\x00\x00\x00garbage")
	pub(topology.RecordsExchange, "", "application/json", `{"ts_ns":1,"src_ip":"not an ip"`)
	// A good hand-published JSON record after the bad ones is still stored.
	now := time.Now().UnixNano()
	pub(topology.RecordsExchange, "", "application/json",
		fmt.Sprintf(`{"ts_ns":%d,"src_ip":"192.0.2.7","dst_ip":"127.0.0.1","src_port":40001,"dst_port":7000,"tcp_flags":2}`, now))

	waitFor(t, 15*time.Second, "control messages refused and counted", func() (bool, string) {
		m, err := metrics(c.addr)
		if err != nil {
			return false, err.Error()
		}
		var rejected float64
		for k, v := range m {
			if strings.HasPrefix(k, "connpipe_consumer_control_rejected_total") {
				rejected += v
			}
		}
		return rejected >= 4, fmt.Sprintf("rejected %v", rejected)
	})
	waitFor(t, 15*time.Second, "good record stored", func() (bool, string) {
		a, b := s.storedAll()
		return len(a)+len(b) == 1, fmt.Sprintf("%d stored", len(a)+len(b))
	})
	if !c.alive() || !healthy(c.addr) {
		t.Fatal("consumer died or is unhealthy after bad input")
	}
	if v := metric(t, c.addr, "connpipe_consumer_control_version"); v != 0 {
		t.Fatalf("control version %v after only bad changes, want 0", v)
	}
	out, err := s.cli("weights", "get")
	if err != nil || !strings.Contains(out, "30") || !strings.Contains(out, "70") {
		t.Fatalf("weights changed by bad input: %v\n%s", err, out)
	}
	// Both broken record messages are dead-lettered with a reason.
	dead := map[string]bool{}
	waitFor(t, 15*time.Second, "two messages dead-lettered", func() (bool, string) {
		d, ok, err := ch.Get(topology.DeadQueue, true)
		if err != nil {
			return false, err.Error()
		}
		if ok {
			reason, _ := d.Headers[topology.ErrorHeader].(string)
			if reason == "" {
				t.Fatalf("dead-lettered message without %s header: %q", topology.ErrorHeader, d.Body)
			}
			dead[string(d.Body)] = true
			t.Logf("dead-lettered %q: %s", d.Body, reason)
		}
		return len(dead) == 2, fmt.Sprintf("%d dead-lettered", len(dead))
	})
}

// A consumer killed with SIGKILL mid-stream loses nothing, and what it
// stored without acking is not stored again when redelivered.
func TestKillNineLosesNoConfirmedRecord(t *testing.T) {
	s := newSystem(t, nil)
	k := newKernelCounter(t, s.port)
	c1 := s.startConsumer("consumer-1")
	s.startConsumer("consumer-2")
	s.startCapture()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for block := 1; block <= 60 && ctx.Err() == nil; block++ {
			if err := sendTraffic(s.port, block, 20, 2); err != nil {
				t.Errorf("traffic: %v", err)
				return
			}
		}
	}()
	waitFor(t, 30*time.Second, "consumer-1 mid-stream", func() (bool, string) {
		a, b := c1.split(t)
		return a+b > 200, fmt.Sprintf("%v stored", a+b)
	})
	c1.kill9()
	select {
	case <-done:
		t.Fatal("traffic had ended before the kill; the test must kill mid-stream")
	default:
	}
	<-done
	// Redeliveries of what consumer-1 stored but did not ack are
	// recognised: Redis ends with exactly the packets seen.
	a, b := s.waitStored(k, false)
	want := map[seen]int{}
	for _, p := range k.snapshot() {
		want[p]++
	}
	got := asSeen(append(a, b...))
	lost := 0
	for p, n := range want {
		if got[p] < n {
			lost += n - got[p]
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d packets missing from Redis after kill -9", lost, len(k.snapshot()))
	}
	t.Logf("kernel saw %d packets; Redis holds %d records; %.0f records of redeliveries skipped as stored already",
		len(k.snapshot()), len(a)+len(b), s.duplicatesSkipped())
}

func TestRetentionThroughThePipeline(t *testing.T) {
	const retention, ringTimeout, batchInterval = 3 * time.Second, 200 * time.Millisecond, 50 * time.Millisecond
	s := newSystem(t, map[string]string{"RETENTION": retention.String(),
		"RING_TIMEOUT": ringTimeout.String(), "BATCH_INTERVAL": batchInterval.String()})
	k := newKernelCounter(t, s.port)
	s.startConsumer("consumer-1")
	s.startCapture()
	traffic(t, s.port, 1, 10, 2)
	a, b := s.waitStored(k, false)
	all := append(a, b...)
	first, last := all[0].TS, all[0].TS
	for _, r := range all {
		first, last = min(first, r.TS), max(last, r.TS)
	}
	deadline := time.Unix(0, first).Add(retention)
	for time.Until(deadline) > 100*time.Millisecond {
		a, b := s.storedAll()
		if len(a)+len(b) != len(all) {
			t.Fatalf("%d of %d records gone %v before the earliest deadline", len(all)-len(a)-len(b), len(all), time.Until(deadline))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A record's bucket is the second of max(capture time, ingest time)
	// and expires at that second's end + RETENTION (package store). Capture
	// hands a record over at most RING_TIMEOUT after capturing it, and its
	// batch is sent within BATCH_INTERVAL; Redis then expires the key within
	// its expiry cycle.
	ingest := last + int64(ringTimeout+batchInterval)
	end := time.UnixMilli(store.Layout{Retention: retention}.DeadlineMS(store.Bucket(last, ingest, 0)))
	waitFor(t, time.Until(end)+500*time.Millisecond, "every record gone within 0.5s of its bucket's deadline", func() (bool, string) {
		a, b := s.storedAll()
		return len(a)+len(b) == 0, fmt.Sprintf("%d left", len(a)+len(b))
	})
}
