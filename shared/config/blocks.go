package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
)

// The blocks below declare every variable that more than one service
// reads, each once: a service's configuration embeds the blocks it needs,
// and envconfig, Vars, -h and the README check see their fields as the
// service's own. A service that means something else by one of them, or
// starts it elsewhere, says so in its Tune (see Tuner), not in a second
// declaration.

// AMQP is the broker connection of every service.
type AMQP struct {
	AMQPURL    string `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ; several nodes of a cluster comma-separated; amqps:// for TLS"`
	AMQPCAFile string `envconfig:"AMQP_CA_FILE" desc:"PEM CA certificates trusted for amqps:// (empty: the system's roots)"`
}

// Check parses AMQP_URL's nodes when it is set and loads AMQP_CA_FILE.
func (a AMQP) Check() error {
	if strings.TrimSpace(a.AMQPURL) != "" {
		if _, err := broker.Nodes(a.AMQPURL); err != nil {
			return err
		}
	}
	return broker.UseCA(a.AMQPCAFile)
}

// Metrics is where a service serves /metrics and /healthz. METRICS_ADDR
// has no default here: each service tunes its own port.
type Metrics struct {
	MetricsAddr  string `envconfig:"METRICS_ADDR" desc:"serve /metrics and /healthz here (empty: no server)"`
	MetricsToken string `envconfig:"METRICS_TOKEN" desc:"when set, /metrics answers only Authorization: Bearer TOKEN (/healthz stays open)"`
}

// Logging is the level and format of a service's log (package logging).
type Logging struct {
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"auto" desc:"auto (text on a terminal, else json), text or json"`
}

// Ops is Metrics and Logging, in that order.
type Ops struct {
	Metrics
	Logging
}

// Pool is the starting routing table and the addresses a service may dial
// as backends (control.Start reads them).
type Pool struct {
	Backends     string `envconfig:"BACKENDS" default:"redis-a=127.0.0.1:6379,redis-b=127.0.0.1:6380" desc:"the starting Redis instances, name=host:port or name=redis://user:password@host:port/db or rediss://, until the control log has a table"`
	BackendAllow string `envconfig:"BACKEND_ALLOW" desc:"addresses records may be sent to: host:port, CIDR:port, port * for any, or * (empty: the host:port pairs of BACKENDS)"`
	Weights      string `envconfig:"WEIGHTS" default:"redis-a=30,redis-b=70" desc:"the starting weights, name=weight (others get 1)"`
}

// Redis is how a service logs in to the backends (package redisconn).
type Redis struct {
	RedisCAFile      string `envconfig:"REDIS_CA_FILE" desc:"PEM certificates trusted for rediss:// backends (empty: the system's roots)"`
	RedisUsername    string `envconfig:"REDIS_USERNAME" desc:"ACL user for every backend whose address names no password"`
	RedisPassword    string `envconfig:"REDIS_PASSWORD" desc:"password for REDIS_USERNAME (or for the default user) on every backend whose address names none"`
	RedisCredentials string `envconfig:"REDIS_CREDENTIALS" desc:"logins a backend may name as its credential: NAME=USER:PASSWORD, comma-separated"`
}

// Store is the Redis layout's window and key prefix (package store).
type Store struct {
	Retention   time.Duration `envconfig:"RETENTION" default:"5m" desc:"how long records stay readable"`
	RedisPrefix string        `envconfig:"REDIS_PREFIX" default:"cp:" desc:"key prefix in Redis"`
}

// Check refuses a window that is not positive and an empty prefix.
func (s Store) Check() error {
	if s.Retention <= 0 {
		return fmt.Errorf("RETENTION=%s: want a positive duration such as 5m", s.Retention)
	}
	if s.RedisPrefix == "" {
		return fmt.Errorf("REDIS_PREFIX is empty: want a key prefix such as %q", "cp:")
	}
	return nil
}
