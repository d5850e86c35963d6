package controllog_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

func initial(t *testing.T) *control.Table {
	t.Helper()
	tb, err := control.NewTable([]control.Backend{
		{Name: "redis-a", Addr: "127.0.0.1:6379", Weight: 30},
		{Name: "redis-b", Addr: "127.0.0.1:6380", Weight: 70},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func start(t *testing.T, ctx context.Context, url, name string) *controllog.Reader {
	t.Helper()
	r := controllog.New(controllog.Config{URL: url, Name: name, Initial: initial(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { <-done })
	select {
	case <-r.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("reader %s not ready after 20s", name)
	}
	return r
}

// publishRaw sends a body to the control stream as any AMQP client would.
func publishRaw(t *testing.T, url, body string) {
	t.Helper()
	ch := testenv.Channel(t, url)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, ch, "", topology.ControlStream, amqp.Publishing{ContentType: "application/json", Body: []byte(body)})
}

func waitVersion(t *testing.T, r *controllog.Reader, v int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Table().Version < v {
		if time.Now().After(deadline) {
			t.Fatalf("table at version %d, want %d", r.Table().Version, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReadersConvergeAndLateReaderStartsAtLatest(t *testing.T) {
	url := testenv.AMQP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := start(t, ctx, url, "reader-a")
	b := start(t, ctx, url, "reader-b")
	subB, unsub := b.Subscribe()
	defer unsub()

	res, tb, err := a.Publish(ctx, control.Message{Op: control.OpSetWeights, Weights: map[string]int{"redis-a": 50, "redis-b": 50}})
	if err != nil || res.Err != nil {
		t.Fatalf("publish: %v / verdict %v", err, res.Err)
	}
	if tb.Version != 1 || tb.String() != "redis-a=50 redis-b=50" {
		t.Fatalf("after publish: version %d %s", tb.Version, tb)
	}
	// Hand-published messages: two refused, one applied.
	publishRaw(t, url, `{"op":"set_weights","weights":{"redis-c":10}}`)
	publishRaw(t, url, `{"op":"set_weights","weights":{"redis-a":300}}`)
	publishRaw(t, url, `{not json`)
	publishRaw(t, url, `{"op":"set_weights","weights":{"redis-a":20,"redis-b":80}}`)
	waitVersion(t, b, 2)
	waitVersion(t, a, 2)
	if a.Table().String() != "redis-a=20 redis-b=80" || b.Table().String() != a.Table().String() {
		t.Fatalf("diverged: a=%s b=%s", a.Table(), b.Table())
	}
	// b saw every verdict in order: applied, refused ×3, applied.
	var got []string
	for len(got) < 5 {
		select {
		case r := <-subB:
			if r.Message.Op == control.OpSync {
				continue
			}
			switch {
			case r.Err == nil:
				got = append(got, "ok")
			case errors.Is(r.Err, control.ErrUnknownBackend):
				got = append(got, "unknown")
			case errors.Is(r.Err, control.ErrBadWeight):
				got = append(got, "weight")
			case errors.Is(r.Err, control.ErrMalformed):
				got = append(got, "malformed")
			default:
				got = append(got, r.Err.Error())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("verdicts so far %v", got)
		}
	}
	if want := "[ok unknown weight malformed ok]"; fmtSlice(got) != want {
		t.Fatalf("verdicts %v, want %s", got, want)
	}
	// A reader that starts now is Ready only with the latest table.
	c := start(t, ctx, url, "reader-c")
	if c.Table().Version != 2 || c.Table().String() != "redis-a=20 redis-b=80" {
		t.Fatalf("late reader at version %d %s", c.Table().Version, c.Table())
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}

func TestExpectVersionLetsOneOfTwoWritersWin(t *testing.T) {
	url := testenv.AMQP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := start(t, ctx, url, "writer-a")
	b := start(t, ctx, url, "writer-b")
	v := int64(0)
	var wg sync.WaitGroup
	results := make([]control.Result, 2)
	for i, r := range []*controllog.Reader{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _, err := r.Publish(ctx, control.Message{Op: control.OpSetWeights, ExpectVersion: &v,
				Weights: map[string]int{"redis-a": 10 + i, "redis-b": 90}})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	won, stale := 0, 0
	for _, r := range results {
		switch {
		case r.Err == nil && r.Changed:
			won++
		case errors.Is(r.Err, control.ErrStaleVersion):
			stale++
		}
	}
	if won != 1 || stale != 1 {
		t.Fatalf("won %d, stale %d: %+v", won, stale, results)
	}
	waitVersion(t, a, 1)
	waitVersion(t, b, 1)
	if a.Table().String() != b.Table().String() {
		t.Fatalf("diverged: %s vs %s", a.Table(), b.Table())
	}
}
