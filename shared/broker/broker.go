// Package broker dials RabbitMQ with backoff and declares the topology on
// every connection, and runs each long-lived AMQP user under a Session, so
// services share one reconnect discipline.
//
// AMQP_URL may name several nodes of a cluster, comma-separated: each dial
// tries them in a random order and takes the first that answers, so after
// a node is lost every client moves to another within one backoff step,
// and the clients spread over the nodes left rather than all landing on
// the first one listed.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Backoff is the delay schedule between dial attempts: the first dial is
// at once, and after n failures in a row the next waits Delay(n-1). A
// session that stayed up for Reset starts the schedule afresh, so a broker
// that drops a long-lived connection is dialled again at once.
type Backoff struct {
	Min, Max time.Duration
	Reset    time.Duration
}

// DefaultBackoff waits 100 ms, doubling to 5 s, with jitter; a session up
// for 5 s counts as a success.
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second, Reset: 5 * time.Second}

// Delay is the wait before attempt n (0-based), with ±20 % jitter.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// tlsConfig is used for amqps:// nodes; nil uses the system's roots.
var tlsConfig atomic.Pointer[tls.Config]

// UseCA makes amqps:// connections trust the PEM certificates in file (as
// well as nothing else): AMQP_CA_FILE. An empty file leaves the system's
// roots in force.
func UseCA(file string) error {
	if file == "" {
		tlsConfig.Store(nil)
		return nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("AMQP_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("AMQP_CA_FILE=%s: no PEM certificate in it", file)
	}
	tlsConfig.Store(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	return nil
}

// NodeDialTimeout bounds the TCP and AMQP handshake with one node, so a
// node that is down (or cut off) costs seconds, not the default 30.
const NodeDialTimeout = 5 * time.Second

// Nodes splits an AMQP_URL into its nodes: a comma-separated list of
// amqp:// or amqps:// URLs. An item with no scheme is a host:port that takes
// the scheme, credentials and virtual host of the first item, so
//
//	amqp://user:pass@rabbit-1:5672/vhost,rabbit-2:5672,rabbit-3:5672
//
// names three nodes. Errors name the bad item with its password redacted.
func Nodes(raw string) ([]string, error) {
	var first *url.URL
	var out []string
	for i, item := range strings.Split(raw, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("AMQP_URL: item %d is empty", i+1)
		}
		if !strings.Contains(item, "://") {
			if first == nil {
				return nil, fmt.Errorf("AMQP_URL: the first item must be a whole amqp:// or amqps:// URL, not %q", item)
			}
			u := *first
			u.Host = item
			if _, _, err := netSplit(item); err != nil {
				return nil, fmt.Errorf("AMQP_URL: item %d %q: want host:port", i+1, item)
			}
			out = append(out, u.String())
			continue
		}
		u, err := url.Parse(item)
		if err != nil {
			return nil, fmt.Errorf("AMQP_URL: item %d is not a URL", i+1)
		}
		if u.Scheme != "amqp" && u.Scheme != "amqps" {
			return nil, fmt.Errorf("AMQP_URL: item %d %s: want the amqp or amqps scheme", i+1, u.Redacted())
		}
		if u.Host == "" {
			return nil, fmt.Errorf("AMQP_URL: item %d %s: no host", i+1, u.Redacted())
		}
		if first == nil {
			first = u
		}
		out = append(out, item)
	}
	return out, nil
}

func netSplit(hostport string) (string, string, error) {
	u, err := url.Parse("//" + hostport)
	if err != nil || u.Hostname() == "" || u.Port() == "" || u.Path != "" {
		return "", "", errors.New("not host:port")
	}
	return u.Hostname(), u.Port(), nil
}

// Connect opens one connection to the first of rawURL's nodes that
// answers, trying them in a random order. It does not retry.
func Connect(rawURL string, cfg amqp.Config) (*amqp.Connection, string, error) {
	nodes, err := Nodes(rawURL)
	if err != nil {
		return nil, "", err
	}
	if cfg.Dial == nil {
		cfg.Dial = amqp.DefaultDial(NodeDialTimeout)
	}
	if cfg.TLSClientConfig == nil {
		if c := tlsConfig.Load(); c != nil {
			cfg.TLSClientConfig = c.Clone()
		}
	}
	var errs []error
	for _, i := range rand.Perm(len(nodes)) {
		conn, err := amqp.DialConfig(nodes[i], cfg)
		if err == nil {
			return conn, nodes[i], nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", Redact(nodes[i]), err))
	}
	if len(errs) == 1 {
		return nil, "", errors.Unwrap(errs[0])
	}
	return nil, "", errors.Join(errs...)
}

// Dial connects to one of url's nodes, naming the connection (it shows in
// the management UI), and declares the topology. It retries on
// DefaultBackoff's schedule until it succeeds or ctx ends. A long-lived
// user runs under a Session instead, which dials the same way.
func Dial(ctx context.Context, rawURL, name string, log *slog.Logger) (*amqp.Connection, error) {
	if _, err := Nodes(rawURL); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		conn, err := dialOnce(rawURL, name, log)
		if err == nil {
			return conn, nil
		}
		d := DefaultBackoff.Delay(attempt)
		log.Warn("rabbitmq not reachable, retrying", "url", Redact(rawURL), "connection", name, "err", err, "in", d.Round(time.Millisecond))
		if werr := sleep(ctx, d); werr != nil {
			return nil, fmt.Errorf("dial %s: %w (last error: %v)", Redact(rawURL), werr, err)
		}
	}
}

// dialOnce connects to one of rawURL's nodes (Connect) with the
// connection named and a 10 s heartbeat, and declares the topology.
func dialOnce(rawURL, name string, log *slog.Logger) (*amqp.Connection, error) {
	cfg := amqp.Config{Properties: amqp.NewConnectionProperties(), Heartbeat: 10 * time.Second}
	cfg.Properties.SetClientConnectionName(name)
	conn, node, err := Connect(rawURL, cfg)
	if err != nil {
		return nil, err
	}
	if err := declare(conn, log); err != nil {
		conn.Close()
		return nil, err
	}
	if strings.Contains(rawURL, ",") {
		log.Info("rabbitmq connected", "node", Redact(node), "connection", name)
	}
	return conn, nil
}

// sleep waits d, or returns ctx's cause when ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// declare declares the topology, taking a queue that an older release
// declared without its limits as it is, with a warning that gives the
// policy to put them on it.
func declare(conn *amqp.Connection, log *slog.Logger) error {
	var keep []string
	for {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		err = topology.DeclareKeeping(ch, keep...)
		ch.Close()
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.AccessRefused {
			// A least-privilege user (capture, consumer) may not declare: the
			// topology is admin's to declare, and this user's work fails on
			// its own, with a clear error, until it exists.
			return nil
		}
		var old *topology.OlderQueueError
		if !errors.As(err, &old) || slices.Contains(keep, old.Queue) {
			return err
		}
		// The refused declare closed ch: take the old queue as it is on a
		// new one.
		keep = append(keep, old.Queue)
		if _, warned := warnedOlder.LoadOrStore(old.Queue, true); !warned {
			log.Warn("queue declared by an older release without its limits; using it as it is. Put the limits on it with the policy given",
				"queue", old.Queue, "policy", old.Policy)
		}
	}
}

// warnedOlder makes the warning about a queue without its limits a
// once-per-process one per queue: Dial runs on every reconnect.
var warnedOlder sync.Map

// Redact hides the passwords in an AMQP URL (or a list of them) for logs.
func Redact(rawURL string) string {
	items := strings.Split(rawURL, ",")
	for i, item := range items {
		if !strings.Contains(item, "://") {
			continue // host:port, no credentials
		}
		u, err := url.Parse(strings.TrimSpace(item))
		if err != nil {
			items[i] = "(unparsable url)"
			continue
		}
		items[i] = u.Redacted()
	}
	return strings.Join(items, ",")
}
