package controllog_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

func startWith(t *testing.T, ctx context.Context, cfg controllog.Config) *controllog.Reader {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := controllog.New(cfg)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { <-done })
	select {
	case <-r.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("reader %s not ready after 30s", cfg.Name)
	}
	return r
}

// lastOffset attaches to stream at its last chunk and returns the highest
// offset delivered: a stream's offsets count its messages from 0.
func lastOffset(t *testing.T, amqpURL, stream string) int64 {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	if err := ch.Qos(1000, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(stream, "", false, false, false, false, amqp.Table{"x-stream-offset": "last"})
	if err != nil {
		t.Fatal(err)
	}
	last := int64(-1)
	for {
		select {
		case d := <-ds:
			if off, ok := d.Headers["x-stream-offset"].(int64); ok && off > last {
				last = off
			}
			_ = d.Ack(false)
		case <-time.After(time.Second):
			return last
		}
	}
}

// TestSnapshotsBoundWhatANewReaderFolds: 1,000 changes and 100 restarts
// later, a new reader is ready after folding at most K+1 messages, and the
// log holds the changes and the seed alone.
func TestSnapshotsBoundWhatANewReaderFolds(t *testing.T) {
	amqpURL := testenv.AMQP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const every = 100
	admin := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "admin", Initial: initial(t), Seed: true, SnapshotEvery: every})
	deadline := time.Now().Add(10 * time.Second)
	for !admin.Table().Seeded && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !admin.Table().Seeded {
		t.Fatal("admin did not seed the log")
	}

	// 1,000 changes, hand-published in one burst.
	ch := testenv.Channel(t, amqpURL)
	const changes = 1000
	for i := range changes {
		w := 1 + i%200
		body := fmt.Sprintf(`{"op":"set_weights","weights":{"redis-a":%d,"redis-b":%d}}`, w, 201-w)
		if err := ch.Publish("", topology.ControlStream, false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	waitVersion(t, admin, changes)

	// 100 restarts of readers, ten at a time: each is ready, none writes.
	for batch := range 10 {
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				rctx, rcancel := context.WithCancel(ctx)
				defer rcancel()
				r := controllog.New(controllog.Config{URL: amqpURL, Name: fmt.Sprintf("restart-%d-%d", batch, i), Initial: initial(t),
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				go func() { _ = r.Run(rctx) }()
				select {
				case <-r.Ready():
					if r.Table().Version != changes {
						t.Errorf("restarted reader at version %d, want %d", r.Table().Version, changes)
					}
				case <-time.After(30 * time.Second):
					t.Errorf("restarted reader not ready")
				}
			})
		}
		wg.Wait()
	}

	var logs bytes.Buffer
	late := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "late", Initial: initial(t),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if late.Table().Version != changes || late.Table().String() != admin.Table().String() {
		t.Fatalf("late reader at %s, admin at %s", late.Table().Describe(), admin.Table().Describe())
	}
	if n := late.Stats().CatchUp.Load(); n > every+1 || late.Stats().FromSnap.Load() != 1 {
		t.Errorf("late reader folded %d messages to be ready (from a snapshot: %d sessions); want at most %d", n, late.Stats().FromSnap.Load(), every+1)
	}
	if admin.Stats().Snapshots.Load() < changes/every {
		t.Errorf("admin wrote %d snapshots, want at least %d", admin.Stats().Snapshots.Load(), changes/every)
	}
	// The log holds the seed and the changes: readers wrote nothing.
	if last := lastOffset(t, amqpURL, topology.ControlStream); last != changes {
		t.Errorf("%s ends at offset %d, want %d (the seed at 0 and the changes)", topology.ControlStream, last, changes)
	}
}

// TestReadersWithOtherEnvironmentsFollowTheSeed: a reader whose BACKENDS
// and WEIGHTS differ from the seed routes by the log's table, and says so.
func TestReadersWithOtherEnvironmentsFollowTheSeed(t *testing.T) {
	amqpURL := testenv.AMQP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, err := control.NewTable([]control.Backend{
		{Name: "redis-a", Addr: "127.0.0.1:6379", Weight: 90},
		{Name: "redis-z", Addr: "127.0.0.1:6399", Weight: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	consumer := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "consumer", Initial: other,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	admin := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "admin", Initial: initial(t), Seed: true})
	deadline := time.Now().Add(15 * time.Second)
	for !control.SameRouting(consumer.Table(), admin.Table()) || !consumer.Table().Seeded {
		if time.Now().After(deadline) {
			t.Fatalf("consumer routes by %s, admin by %s", consumer.Table().Describe(), admin.Table().Describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "differ from the starting table in the control log") {
		t.Errorf("no warning that the environment differs from the log; logs:\n%s", logs.String())
	}
	// A second admin with yet another environment changes nothing.
	second := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "admin-2", Initial: other, Seed: true})
	time.Sleep(time.Second)
	if !control.SameRouting(second.Table(), admin.Table()) || admin.Table().String() != initial(t).String() {
		t.Errorf("after a second seed: admin %s, second %s", admin.Table().Describe(), second.Table().Describe())
	}
}

// firstOffset attaches to stream at its first retained message and returns
// that message's offset: 0 until the size limit drops a segment.
func firstOffset(t *testing.T, amqpURL, stream string) int64 {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(stream, "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-ds:
		off, _ := d.Headers["x-stream-offset"].(int64)
		return off
	case <-time.After(10 * time.Second):
		t.Fatalf("%s delivered nothing from its first offset", stream)
		return -1
	}
}

// TestRetentionBoundsTheLog: with the control log's size limit shrunk to
// 1 MiB, 1,000 changes of 3 KiB each (3 MiB) leave it holding about the
// limit, its oldest segments dropped; a new reader still folds the same
// table as admin, from the latest snapshot, which is far newer than
// anything dropped.
func TestRetentionBoundsTheLog(t *testing.T) {
	saved := topology.ControlLimits
	topology.ControlLimits = topology.StreamLimits{MaxBytes: 1 << 20, SegmentBytes: 128 << 10}
	t.Cleanup(func() { topology.ControlLimits = saved })
	amqpURL := testenv.AMQP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const every, changes, size = 100, 1000, 3 << 10
	admin := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "admin", Initial: initial(t), Seed: true, SnapshotEvery: every})
	ch := testenv.Channel(t, amqpURL)
	for i := range changes {
		w := 1 + i%200
		// The id pads each change to about 3 KiB.
		body := fmt.Sprintf(`{"op":"set_weights","id":"%s","weights":{"redis-a":%d,"redis-b":%d}}`, strings.Repeat("p", size), w, 201-w)
		if err := ch.Publish(topology.ControlExchange, "", false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		// In steps that admin follows: a reader that lags by more than
		// the limit would have its next messages dropped under it (the
		// real limit is 256 MiB).
		if (i+1)%every == 0 {
			waitVersion(t, admin, int64(i+1))
		}
	}

	first, last := firstOffset(t, amqpURL, topology.ControlStream), lastOffset(t, amqpURL, topology.ControlStream)
	held := (last - first + 1) * size
	t.Logf("%s holds offsets %d..%d, about %d KiB of %d KiB published", topology.ControlStream, first, last, held>>10, changes*size>>10)
	if first == 0 || held > topology.ControlLimits.MaxBytes+2*topology.ControlLimits.SegmentBytes {
		t.Errorf("%s holds offsets %d..%d (about %d bytes), want its oldest dropped and at most the limit and a segment or two (%d)",
			topology.ControlStream, first, last, held, topology.ControlLimits.MaxBytes)
	}
	late := startWith(t, ctx, controllog.Config{URL: amqpURL, Name: "late", Initial: initial(t)})
	if late.Table().Version != changes || late.Table().String() != admin.Table().String() {
		t.Fatalf("late reader at %s, admin at %s", late.Table().Describe(), admin.Table().Describe())
	}
	if n := late.Stats().CatchUp.Load(); n > every+1 || late.Stats().FromSnap.Load() != 1 {
		t.Errorf("late reader folded %d messages (from a snapshot: %d sessions); want at most %d from a snapshot", n, late.Stats().FromSnap.Load(), every+1)
	}
}
