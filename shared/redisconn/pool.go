package redisconn

import (
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Pool keeps one go-redis client per address, made on first use, for a
// process that reads from whichever instances its routing table names.
// It is safe for concurrent use.
type Pool struct {
	// Options gives the options for an address; nil dials the plain
	// host:port.
	Options func(addr string) *redis.Options
	// New, when not nil, makes the client for an address instead (for a
	// sentinel backend, a failover client: ClientOptions.NewClient).
	New func(addr string) *redis.Client

	mu      sync.Mutex
	clients map[string]*redis.Client
}

// Client returns the client for addr, creating it on first use.
func (p *Pool) Client(addr string) *redis.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c
	}
	if p.clients == nil {
		p.clients = map[string]*redis.Client{}
	}
	var c *redis.Client
	switch {
	case p.New != nil:
		c = p.New(addr)
	case p.Options != nil:
		c = redis.NewClient(p.Options(addr))
	default:
		c = redis.NewClient(&redis.Options{Addr: addr})
	}
	p.clients[addr] = c
	return c
}

// Cmdable is Client as a redis.Cmdable, for the readers that take a
// func(addr string) redis.Cmdable.
func (p *Pool) Cmdable(addr string) redis.Cmdable { return p.Client(addr) }

// Close closes every client.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, c := range p.clients {
		errs = append(errs, c.Close())
	}
	p.clients = nil
	return errors.Join(errs...)
}
