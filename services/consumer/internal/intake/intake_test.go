package intake

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/consumer/internal/brokertest"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
)

// blockingStore blocks its first Store until release is closed and then
// reports success whatever its context says, like a write that finished
// after the channel died.
type blockingStore struct {
	release chan struct{}
	mu      sync.Mutex
	calls   int
	records int
	first   chan struct{}
}

func (s *blockingStore) Store(ctx context.Context, msgs []*record.Batch) error {
	s.mu.Lock()
	s.calls++
	n := s.calls
	for _, m := range msgs {
		s.records += len(m.Records)
	}
	s.mu.Unlock()
	if n == 1 {
		close(s.first)
		<-s.release
	}
	return nil
}

func publish(t *testing.T, url string, n int) {
	t.Helper()
	ch := testenv.Channel(t, url)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	var enc record.Encoder
	enc.Reset(time.Now().UnixNano())
	enc.Add(&record.Record{TS: time.Now().UnixNano(), Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 2})
	for range n {
		testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{ContentType: record.ContentTypeBinary, Body: enc.Bytes()})
	}
}

func eventually(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: no %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// A round whose store finishes after its channel died is not acked on the
// new channel: the broker redelivers it and it is stored (and acked) again.
func TestNoAckAcrossChannels(t *testing.T) {
	url := testenv.AMQP(t)
	st := &blockingStore{release: make(chan struct{}), first: make(chan struct{})}
	m := NewMetrics(nil)
	in := New(Config{URL: url, ConsumerID: "t1", Prefetch: 8, Store: st, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	publish(t, url, 1)
	select {
	case <-st.first:
	case <-time.After(10 * time.Second):
		t.Fatal("no store call")
	}
	eventually(t, 20*time.Second, "the consumer's connection closed by the broker", func() bool {
		return brokertest.CloseConnections(t, url, "consumer t1") >= 1
	})
	// Reconnects counts a session's end before the supervisor marks it
	// down, so wait for the second session itself.
	eventually(t, 10*time.Second, "a reconnect", func() bool {
		return testutil.ToFloat64(m.Reconnects) >= 1 && in.Connected() && in.Broker().Sessions >= 2
	})
	// The broker session dialled again, and says why the last one ended.
	if st := in.Broker(); st.Sessions != 2 || !strings.Contains(st.Reason, "CONNECTION_FORCED") {
		t.Errorf("broker session %+v, want the second, after one the broker closed", st)
	}
	close(st.release)
	// The redelivered message is stored again and acked once, on the new
	// channel, and that channel stays up (a stale tag would close it).
	eventually(t, 10*time.Second, "the redelivered message acked", func() bool { return in.Acked() == 1 })
	time.Sleep(300 * time.Millisecond)
	st.mu.Lock()
	calls := st.calls
	st.mu.Unlock()
	if calls != 2 || in.Acked() != 1 || testutil.ToFloat64(m.Reconnects) != 1 {
		t.Fatalf("store calls %d (want 2), acked %d (want 1), reconnects %v (want 1)", calls, in.Acked(), testutil.ToFloat64(m.Reconnects))
	}
}

func TestDeadReason(t *testing.T) {
	tests := []struct {
		ct, body, want string
	}{
		{record.ContentTypeBinary, "XXXXXXXXXXXXXXXXXXXXXXXX", "bad_magic"},
		{record.ContentTypeBinary, "CPRB\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "bad_version"},
		{record.ContentTypeBinary, "CPRB", "truncated"},
		{record.ContentTypeJSON, "{", "bad_json"},
		{record.ContentTypeJSON, "[]", "no_records"},
		{"application/xml", "<r/>", "content_type"},
	}
	for _, tt := range tests {
		var b record.Batch
		err := record.Decode(tt.ct, []byte(tt.body), &b)
		if err == nil {
			t.Fatalf("%s %q decoded", tt.ct, tt.body)
		}
		if got := DeadReason(err); got != tt.want {
			t.Errorf("DeadReason(%v) = %s, want %s", err, got, tt.want)
		}
	}
	if got := DeadReason(errors.New("something else")); got != "other" {
		t.Errorf("DeadReason(other) = %s", got)
	}
}

// stuckStore never stores: it waits for its context, like a pool whose
// every Redis is down.
type stuckStore struct{ called chan struct{} }

func (s *stuckStore) Store(ctx context.Context, msgs []*record.Batch) error {
	select {
	case s.called <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// Shutdown while nothing can be stored gives up after DrainTimeout and
// leaves the messages on the queue.
func TestShutdownGivesUpAndLeavesMessages(t *testing.T) {
	url := testenv.AMQP(t)
	st := &stuckStore{called: make(chan struct{}, 1)}
	in := New(Config{URL: url, ConsumerID: "t2", Store: st, DrainTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	publish(t, url, 3)
	select {
	case <-st.called:
	case <-time.After(10 * time.Second):
		t.Fatal("no store call")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of shutdown with a stuck store")
	}
	t.Logf("stopped %v after shutdown began", time.Since(start).Round(time.Millisecond))
	if in.Acked() != 0 {
		t.Fatalf("acked %d messages that were never stored", in.Acked())
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "3 messages back on the queue", func() bool {
		q, err := ch.QueueDeclarePassive(topology.RecordsQueue, true, false, false, false, nil)
		return err == nil && q.Messages == 3
	})
}
