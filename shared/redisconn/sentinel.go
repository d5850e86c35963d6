package redisconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/redis/go-redis/v9"
)

// ClientOptions are the options of a backend's client: those of a plain
// instance, or, for a sentinel address, the primary's login, TLS and
// database with the sentinels that name the primary (Sentinel).
// Callers may set the embedded timeouts, retries and pool size for
// either.
type ClientOptions struct {
	*redis.Options
	Sentinel *SentinelOptions // nil: a plain instance
}

// SentinelOptions are the sentinels of a Sentinel-managed backend.
type SentinelOptions struct {
	Master             string
	Addrs              []string // host:port of each sentinel
	Username, Password string   // the sentinels' login
}

// NewClient returns the client: go-redis's failover client for a
// sentinel backend, which asks the sentinels for the primary and follows
// it through a failover, or a plain client.
func (o ClientOptions) NewClient() *redis.Client {
	if o.Sentinel == nil {
		return redis.NewClient(o.Options)
	}
	p := o.Options
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: o.Sentinel.Master, SentinelAddrs: o.Sentinel.Addrs,
		SentinelUsername: o.Sentinel.Username, SentinelPassword: o.Sentinel.Password,
		Username: p.Username, Password: p.Password, DB: p.DB, TLSConfig: p.TLSConfig, Dialer: p.Dialer,
		DialTimeout: p.DialTimeout, ReadTimeout: p.ReadTimeout, WriteTimeout: p.WriteTimeout,
		MaxRetries: p.MaxRetries, DialerRetries: p.DialerRetries, PoolSize: p.PoolSize,
	})
}

// sentinelOptions is OptionsFor for a sentinel address.
func sentinelOptions(b control.Backend, c Credentials) (ClientOptions, error) {
	s, err := control.ParseSentinel(b.Addr)
	if err != nil {
		return ClientOptions{}, err
	}
	o := ClientOptions{Options: &redis.Options{DB: s.DB}, Sentinel: &SentinelOptions{
		Master: s.Master, Addrs: s.Sentinels, Username: s.Username, Password: s.Password,
	}}
	if s.Credential != "" {
		login, ok := c.Named[s.Credential]
		if !ok {
			return ClientOptions{}, fmt.Errorf("backend %q: sentinels: %w: %q", b.Name, ErrUnknownCredential, s.Credential)
		}
		o.Sentinel.Username, o.Sentinel.Password = login.Username, login.Password
	}
	if c.Serves(b.Addr) {
		o.Username, o.Password = c.Username, c.Password
	}
	if s.TLS {
		o.TLSConfig = &tls.Config{RootCAs: c.CA, MinVersion: tls.VersionTLS12}
	}
	o.Dialer = allowDialer(c.Allow, o.TLSConfig)
	return o, nil
}

// allowDialer dials only the addresses allow allows (a primary a sentinel
// names may be anywhere), over TLS with cfg when cfg is not nil.
func allowDialer(allow *control.Allow, cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !allow.Allows(addr) {
			return nil, fmt.Errorf("dial %s: %w", addr, control.ErrNotAllowed)
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil || cfg == nil {
			return conn, err
		}
		host, _, _ := net.SplitHostPort(addr)
		tc := cfg.Clone()
		tc.ServerName = host
		return tls.Client(conn, tc), nil
	}
}

// sentinelHomeKey is a sentinel address as Home knows it: the scheme
// class, the sentinels in order and the master name.
func sentinelHomeKey(addr string) (string, bool) {
	s, err := control.ParseSentinel(addr)
	if err != nil {
		return "", false
	}
	class := "sentinel "
	if s.TLS {
		class = "sentinels "
	}
	hosts := make([]string, len(s.Sentinels))
	for i, h := range s.Sentinels {
		hosts[i] = strings.ToLower(h)
	}
	slices.Sort(hosts)
	return class + strings.Join(hosts, ",") + "/" + s.Master, true
}

// Replication is what a primary says of itself: its address and its
// replicas (host:port and link state each).
type Replication struct {
	Primary  string   `json:"primary"`
	Replicas []string `json:"replicas"`
}

// Describe asks the instance rdb talks to (for a sentinel backend, the
// primary the sentinels name now) for its address and its replicas.
func Describe(ctx context.Context, rdb redis.Cmdable) (Replication, error) {
	var r Replication
	info, err := rdb.ClientInfo(ctx).Result()
	if err != nil {
		return r, fmt.Errorf("client info: %w", err)
	}
	r.Primary = info.LAddr
	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return r, fmt.Errorf("info replication: %w", err)
	}
	r.Replicas = replicas(repl)
	return r, nil
}

// replicas reads the slaveN lines of INFO replication
// ("slave0:ip=10.0.0.6,port=6379,state=online,offset=…,lag=0") as
// "10.0.0.6:6379 online".
func replicas(info string) []string {
	out := []string{}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(k, "slave") || strings.Contains(k, "_") {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.Split(v, ",") {
			if a, b, ok := strings.Cut(kv, "="); ok {
				f[a] = b
			}
		}
		out = append(out, net.JoinHostPort(f["ip"], f["port"])+" "+f["state"])
	}
	return out
}
