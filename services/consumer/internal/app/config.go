package app

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/store"
)

// Config is the consumer's configuration, from the environment.
type Config struct {
	AMQPURL    string `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ; several nodes of a cluster comma-separated; amqps:// for TLS"`
	AMQPCAFile string `envconfig:"AMQP_CA_FILE" desc:"PEM CA certificates trusted for amqps:// (empty: the system's roots)"`
	Backends   string `envconfig:"BACKENDS" default:"redis-a=127.0.0.1:6379,redis-b=127.0.0.1:6380" desc:"the starting Redis instances, name=host:port or name=redis://user:password@host:port/db or rediss://, until the control log has a table"`
	// BackendAllow lists the hosts this consumer may connect to as
	// backends (control.Allow); empty: the hosts of BACKENDS only.
	BackendAllow string        `envconfig:"BACKEND_ALLOW" desc:"addresses records may be sent to: host:port, CIDR:port, port * for any, or * (empty: the host:port pairs of BACKENDS)"`
	Weights      string        `envconfig:"WEIGHTS" default:"redis-a=30,redis-b=70" desc:"the starting weights, name=weight (others get 1)"`
	Retention    time.Duration `envconfig:"RETENTION" default:"5m" desc:"how long records stay readable"`
	RedisPrefix  string        `envconfig:"REDIS_PREFIX" default:"cp:" desc:"key prefix in Redis"`
	StoreLayout  int           `envconfig:"STORE_LAYOUT" default:"2" desc:"the Redis layout written: 2, or 1 while an admin older than layout 2 still reads (rolling upgrade)"`
	RedisTimeout time.Duration `envconfig:"REDIS_TIMEOUT" default:"2s" desc:"per Redis call"`
	// RedisCAFile holds the PEM certificates trusted for rediss://
	// backends; empty trusts the system's roots.
	RedisCAFile       string        `envconfig:"REDIS_CA_FILE" desc:"PEM certificates trusted for rediss:// backends (empty: the system's roots)"`
	RedisUsername     string        `envconfig:"REDIS_USERNAME" desc:"ACL user for every backend whose address names no password"`
	RedisPassword     string        `envconfig:"REDIS_PASSWORD" desc:"password for REDIS_USERNAME (or for the default user) on every backend whose address names none"`
	RedisCredentials  string        `envconfig:"REDIS_CREDENTIALS" desc:"logins a backend may name as its credential: NAME=USER:PASSWORD, comma-separated"`
	Prefetch          int           `envconfig:"PREFETCH" default:"64" desc:"unacked messages the broker may send ahead"`
	MaxMessageBytes   int           `envconfig:"MAX_MESSAGE_BYTES" default:"1048576" desc:"a records message larger than this is dead-lettered too_large without being decoded"`
	DrainedFallback   bool          `envconfig:"DRAINED_FALLBACK" default:"false" desc:"true: store on weight-0 instances while no weighted one can"`
	FailoverWait      time.Duration `envconfig:"REDIS_FAILOVER_WAIT" default:"30s" desc:"how long records wait, unacked, for a sentinel backend that is failing over before it leaves rotation"`
	MinReplicas       int           `envconfig:"REDIS_MIN_REPLICAS" default:"0" desc:"replicas that must confirm a write (WAIT) before its records are acked; 1 loses no acked record in a failover"`
	ReplicaTimeout    time.Duration `envconfig:"REDIS_REPLICA_TIMEOUT" default:"2s" desc:"how long a write waits for REDIS_MIN_REPLICAS replicas to confirm it"`
	ConsumerID        string        `envconfig:"CONSUMER_ID" desc:"name in heartbeats, metrics and the management UI (empty: hostname and a random suffix)"`
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"1s" desc:"heartbeats on conn.heartbeat (also sent right after each change)"`
	MetricsAddr       string        `envconfig:"METRICS_ADDR" default:":9101" desc:"serve /metrics and /healthz here (empty: no server)"`
	MetricsToken      string        `envconfig:"METRICS_TOKEN" desc:"when set, /metrics answers only Authorization: Bearer TOKEN (/healthz stays open)"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat         string        `envconfig:"LOG_FORMAT" default:"auto" desc:"auto (text on a terminal, else json), text or json"`
}

// LoadConfig reads the environment and validates the result.
func LoadConfig() (Config, error) {
	var c Config
	if err := config.Load(&c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Defaults returns the configuration with every default applied, as with
// an empty environment (tests start from it), read from the tags.
func Defaults() Config {
	var c Config
	if err := config.Defaults(&c); err != nil {
		panic(err) // a bad default tag: a programming error, caught by every test
	}
	return c
}

// WriteUsage prints every variable with its default and meaning.
func WriteUsage(w io.Writer) {
	fmt.Fprintln(w, "consumer takes records off conn.records, routes each by the control log's\ntable and stores it in Redis. It is configured by the environment:\n\nname, default, meaning:")
	config.WriteUsage(w, Config{})
}

// Validate checks the values envconfig cannot, naming the variable, and
// fills CONSUMER_ID when it is empty.
func (c *Config) Validate() error {
	if _, err := c.Allow(); err != nil {
		return err
	}
	if strings.TrimSpace(c.AMQPURL) == "" {
		return fmt.Errorf("AMQP_URL is empty")
	}
	if _, err := broker.Nodes(c.AMQPURL); err != nil {
		return err
	}
	if err := broker.UseCA(c.AMQPCAFile); err != nil {
		return err
	}
	if c.Retention <= 0 {
		return fmt.Errorf("RETENTION=%s: want a positive duration such as 5m", c.Retention)
	}
	if c.RedisTimeout <= 0 {
		return fmt.Errorf("REDIS_TIMEOUT=%s: want a positive duration such as 2s", c.RedisTimeout)
	}
	if c.FailoverWait <= 0 || c.ReplicaTimeout <= 0 {
		return fmt.Errorf("REDIS_FAILOVER_WAIT=%s, REDIS_REPLICA_TIMEOUT=%s: want positive durations such as 30s", c.FailoverWait, c.ReplicaTimeout)
	}
	if c.MinReplicas < 0 || c.MinReplicas > 16 {
		return fmt.Errorf("REDIS_MIN_REPLICAS=%d: want 0 to 16", c.MinReplicas)
	}
	if c.Prefetch < 1 || c.Prefetch > 65535 {
		return fmt.Errorf("PREFETCH=%d: want 1..65535 messages", c.Prefetch)
	}
	if c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 512<<20 {
		return fmt.Errorf("MAX_MESSAGE_BYTES=%d: want 1024..%d bytes (RabbitMQ's own max_message_size is at most 512 MiB)", c.MaxMessageBytes, 512<<20)
	}
	if c.HeartbeatInterval <= 0 {
		return fmt.Errorf("HEARTBEAT_INTERVAL=%s: want a positive duration such as 1s", c.HeartbeatInterval)
	}
	if c.StoreLayout != 1 && c.StoreLayout != 2 {
		return fmt.Errorf("STORE_LAYOUT=%d: want 2 (or 1 during a rolling upgrade)", c.StoreLayout)
	}
	if c.RedisPrefix == "" {
		return fmt.Errorf("REDIS_PREFIX is empty: want a key prefix such as %q", store.DefaultPrefix)
	}
	if c.ConsumerID == "" {
		c.ConsumerID = defaultID()
	}
	return nil
}

// Table is the initial routing table, from BACKENDS and WEIGHTS.
func (c *Config) Table() (*control.Table, error) {
	backends, err := config.Backends(c.Backends, c.Weights)
	if err != nil {
		return nil, err
	}
	t, err := control.NewTable(backends)
	if err != nil {
		return nil, fmt.Errorf("BACKENDS/WEIGHTS: %w", err)
	}
	return t, nil
}

// Allow is BACKEND_ALLOW, checked against BACKENDS: a starting backend
// outside the list is a configuration error.
func (c *Config) Allow() (*control.Allow, error) {
	t, err := c.Table()
	if err != nil {
		return nil, err
	}
	a, err := control.ParseAllow(c.BackendAllow, t.Backends)
	if err != nil {
		return nil, err
	}
	for _, b := range t.Backends {
		if err := a.Check(b); err != nil {
			return nil, fmt.Errorf("BACKENDS: %w", err)
		}
	}
	return a, nil
}

// defaultID is the host name and a short random suffix, so replicas on one
// host (or restarts) are told apart.
func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "consumer"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
