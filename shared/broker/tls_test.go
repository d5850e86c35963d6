package broker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The private node of this package: AMQP on tlsNodePort, TLS on tlsPort.
const (
	tlsNodePort = 5795
	tlsPort     = 5796
)

// TestAMQPSToATLSListener dials a RabbitMQ TLS listener with a certificate
// the test made: trusted through AMQP_CA_FILE it declares the topology and
// publishes under confirms; without it the dial is refused, naming the
// certificate.
func TestAMQPSToATLSListener(t *testing.T) {
	certs := testenv.NewCerts(t)
	testenv.StartTLSRabbit(t, "connpipe-tls", tlsNodePort, tlsPort, certs)
	url := fmt.Sprintf("amqps://guest:guest@localhost:%d/", tlsPort)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// Not trusted: refused, and said so.
	if err := broker.UseCA(""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := broker.Connect(url, amqp.Config{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("dial without the CA: %v, want a certificate error", err)
	}

	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, certs.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := broker.UseCA(ca); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.UseCA("") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := broker.Dial(ctx, url, "tls test", log)
	if err != nil {
		t.Fatalf("dial over TLS: %v", err)
	}
	defer conn.Close()
	if state := conn.ConnectionState(); !state.HandshakeComplete {
		t.Fatal("connection is not TLS")
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm(topology.RecordsExchange, "", false, false, amqp.Publishing{Body: []byte("x")})
	if err != nil || !dc.Wait() {
		t.Fatalf("publish over TLS: %v", err)
	}

	if err := broker.UseCA(filepath.Join(t.TempDir(), "missing.pem")); err == nil || !strings.Contains(err.Error(), "AMQP_CA_FILE") {
		t.Errorf("UseCA of a missing file: %v, want an error naming AMQP_CA_FILE", err)
	}
}
