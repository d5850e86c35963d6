package app

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
)

// Config is the consumer's configuration, from the environment.
type Config struct {
	config.AMQP
	// Pool's BACKEND_ALLOW lists the hosts this consumer may connect to as
	// backends (control.Allow); empty: the hosts of BACKENDS only.
	config.Pool
	config.Store
	StoreLayout  int           `envconfig:"STORE_LAYOUT" default:"2" desc:"the Redis layout written: 2, or 1 while an admin older than layout 2 still reads (rolling upgrade)"`
	RedisTimeout time.Duration `envconfig:"REDIS_TIMEOUT" default:"2s" desc:"per Redis call"`
	// Redis: REDIS_CA_FILE holds the PEM certificates trusted for rediss://
	// backends; empty trusts the system's roots.
	config.Redis
	Prefetch          int           `envconfig:"PREFETCH" default:"64" desc:"unacked messages the broker may send ahead"`
	MaxMessageBytes   int           `envconfig:"MAX_MESSAGE_BYTES" default:"1048576" desc:"a records message larger than this is dead-lettered too_large without being decoded"`
	DrainedFallback   bool          `envconfig:"DRAINED_FALLBACK" default:"false" desc:"true: store on weight-0 instances while no weighted one can"`
	FailoverWait      time.Duration `envconfig:"REDIS_FAILOVER_WAIT" default:"30s" desc:"how long records wait, unacked, for a sentinel backend that is failing over before it leaves rotation"`
	MinReplicas       int           `envconfig:"REDIS_MIN_REPLICAS" default:"0" desc:"replicas that must confirm a write (WAIT) before its records are acked; 1 loses no acked record in a failover"`
	ReplicaTimeout    time.Duration `envconfig:"REDIS_REPLICA_TIMEOUT" default:"2s" desc:"how long a write waits for REDIS_MIN_REPLICAS replicas to confirm it"`
	ConsumerID        string        `envconfig:"CONSUMER_ID" desc:"name in heartbeats, metrics and the management UI (empty: hostname and a random suffix)"`
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"1s" desc:"heartbeats on conn.heartbeat (also sent right after each change)"`
	config.Ops
}

// Tune gives the consumer's metrics port.
func (Config) Tune() []config.Var { return []config.Var{{Name: "METRICS_ADDR", Default: ":9101"}} }

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
	if err := c.AMQP.Check(); err != nil {
		return err
	}
	if err := c.Store.Check(); err != nil {
		return err
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
	if c.ConsumerID == "" {
		c.ConsumerID = defaultID()
	}
	return nil
}

// Table is the initial routing table, from BACKENDS and WEIGHTS.
func (c *Config) Table() (*control.Table, error) {
	return control.StartTable(c.Backends, c.Weights)
}

// Allow is BACKEND_ALLOW, checked against BACKENDS: a starting backend
// outside the list is a configuration error.
func (c *Config) Allow() (*control.Allow, error) {
	_, a, err := control.Start(c.Backends, c.Weights, c.BackendAllow)
	return a, err
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
