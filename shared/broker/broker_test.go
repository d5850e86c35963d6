package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/testenv"
	amqp "github.com/rabbitmq/amqp091-go"
)

func TestNodes(t *testing.T) {
	got, err := broker.Nodes("amqp://u:p@rabbit-1:5672/vh, rabbit-2:5672,amqps://u:q@rabbit-3:5671/vh")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"amqp://u:p@rabbit-1:5672/vh", "amqp://u:p@rabbit-2:5672/vh", "amqps://u:q@rabbit-3:5671/vh"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Nodes = %q, want %q", got, want)
	}
	for _, bad := range []string{"", "rabbit-1:5672", "amqp://u:secret@a:5672/,", "amqp://u:secret@a:5672/,b", "http://u:secret@a/", "amqp://u:secret@/vh"} {
		_, err := broker.Nodes(bad)
		if err == nil {
			t.Errorf("Nodes(%q) accepted it", bad)
			continue
		}
		if !strings.Contains(err.Error(), "AMQP_URL") || strings.Contains(err.Error(), "secret") {
			t.Errorf("Nodes(%q) error %q: want one naming AMQP_URL without the password", bad, err)
		}
	}
	if r := broker.Redact("amqp://u:secret@a:1/,b:2,amqp://v:other@c:3/"); strings.Contains(r, "secret") || strings.Contains(r, "other") {
		t.Errorf("Redact left a password: %s", r)
	}
}

// withHost returns amqpURL pointed at another host:port.
func withHost(t *testing.T, amqpURL, hostport string) string {
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

func TestDialSkipsADeadNode(t *testing.T) {
	real := testenv.AMQP(t)
	dead := withHost(t, real, "127.0.0.1:1")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The random order puts the dead node first about half the time.
	for i := range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		conn, err := broker.Dial(ctx, dead+","+real, "broker test", log)
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conn.Close()
	}
}

// TestFailoverToAnotherNode stands two proxies in for two nodes of a
// cluster: clients spread over both, and when one is cut each client on it
// is connected again through the other within seconds.
func TestFailoverToAnotherNode(t *testing.T) {
	real := testenv.AMQP(t)
	u, _ := url.Parse(real)
	a, b := testenv.NewProxy(t, u.Host), testenv.NewProxy(t, u.Host)
	list := withHost(t, real, a.Addr) + "," + b.Addr
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := testenv.Context(t, time.Minute)

	const clients = 16
	connected := make(chan bool, clients)
	reconnected := make(chan time.Duration, clients)
	for range clients {
		go func() {
			conn, err := broker.Dial(ctx, list, "failover test", log)
			connected <- err == nil
			if err != nil {
				return
			}
			closed := conn.NotifyClose(make(chan *amqp.Error, 1))
			select {
			case <-closed:
			case <-ctx.Done():
				return
			}
			lost := time.Now()
			conn, err = broker.Dial(ctx, list, "failover test", log)
			if err != nil {
				return
			}
			defer conn.Close()
			reconnected <- time.Since(lost)
			<-ctx.Done()
		}()
	}
	// Every first dial done (a TCP connection counts on a proxy as soon as
	// it opens, before the handshake that may still fail).
	for range clients {
		if !<-connected {
			t.Fatal("a client could not dial through either proxy")
		}
	}
	onA, onB := a.Conns(), b.Conns()
	if onA+onB != clients {
		t.Fatalf("%d+%d clients connected, want %d", onA, onB, clients)
	}
	if onA == 0 || onB == 0 {
		t.Errorf("every client chose one node (%d on a, %d on b): the order is not random", onA, onB)
	}
	a.Cut()
	for i := range onA {
		select {
		case d := <-reconnected:
			if d > 5*time.Second {
				t.Errorf("a client took %s to reach the other node", d.Round(time.Millisecond))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of the %d clients on the cut node reconnected (%d on a, %d on b)", i, onA, a.Conns(), b.Conns())
		}
	}
	if b.Conns() != clients {
		t.Errorf("%d clients on the node left, want %d", b.Conns(), clients)
	}
}
