// Package broker dials RabbitMQ with backoff and declares the topology on
// every connection, so services share one reconnect discipline.
package broker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"time"

	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Backoff is the delay schedule between dial attempts.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff waits 100 ms, doubling to 5 s, with jitter.
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Delay is the wait before attempt n (0-based), with ±20 % jitter.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Dial connects to url, naming the connection (it shows in the management
// UI), and declares the topology. It retries with backoff until it succeeds
// or ctx ends.
func Dial(ctx context.Context, rawURL, name string, log *slog.Logger) (*amqp.Connection, error) {
	cfg := amqp.Config{Properties: amqp.NewConnectionProperties(), Heartbeat: 10 * time.Second}
	cfg.Properties.SetClientConnectionName(name)
	for attempt := 0; ; attempt++ {
		conn, err := amqp.DialConfig(rawURL, cfg)
		if err == nil {
			err = declare(conn)
			if err == nil {
				return conn, nil
			}
			conn.Close()
		}
		d := DefaultBackoff.Delay(attempt)
		log.Warn("rabbitmq not reachable, retrying", "url", Redact(rawURL), "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w (last error: %v)", Redact(rawURL), ctx.Err(), err)
		case <-time.After(d):
		}
	}
}

func declare(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	return topology.Declare(ch)
}

// Redact hides the password in an AMQP URL for logs.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
