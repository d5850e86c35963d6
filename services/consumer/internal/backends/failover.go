package backends

import (
	"context"
	"fmt"
	"time"

	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// failing handles a failed write to b and reports whether b's records
// should wait for it: b is a sentinel backend, the error is what a
// failover looks like (redisconn.ClassifySentinel), and it has not been
// failing over for longer than FailoverWait. Otherwise b leaves rotation
// (markDown) and its records go to the others.
func (s *Sink) failing(b *backend, err error) bool {
	if !b.sentinel || redisconn.ClassifySentinel(err) != redisconn.StateFailover {
		s.markDown(b, err)
		return false
	}
	now := s.cfg.Now()
	b.mu.Lock()
	if b.state == redisconn.StateUp && !b.back.IsZero() && now.Sub(b.back) < failoverSettle {
		// The tail of the failover it just came back from: pooled
		// connections to the demoted primary answer READONLY once each
		// before the client drops them. Its records wait, and it is not
		// a failover of its own.
		b.mu.Unlock()
		return true
	}
	if !b.up.Load() {
		// Out of rotation already (the checker's probe failed): stays out.
		b.mu.Unlock()
		s.markDown(b, err)
		return false
	}
	prev, _ := s.setState(b, redisconn.StateFailover, err, now)
	took := now.Sub(b.since)
	b.nextProbe = now.Add(s.cfg.CheckInterval)
	b.mu.Unlock()
	if prev != redisconn.StateFailover {
		s.stateChanged(b, redisconn.StateFailover)
		s.log.Warn("redis backend failing over, its records wait for it", "backend", b.name, "addr", b.addr,
			"wait", s.cfg.FailoverWait, "err", err)
	}
	if took > s.cfg.FailoverWait {
		s.log.Warn("redis backend still failing over after REDIS_FAILOVER_WAIT, taking it out of rotation",
			"backend", b.name, "addr", b.addr, "for", took.Round(time.Millisecond))
		s.markDown(b, err)
		return false
	}
	return true
}

// failoverSettle is how long after a backend came back from a failover
// the errors of a failover are taken for its tail rather than a new one.
const failoverSettle = 5 * time.Second

// serving notes that b took a write: a backend failing over is back.
func (s *Sink) serving(b *backend) {
	b.mu.Lock()
	if b.state != redisconn.StateFailover {
		b.mu.Unlock()
		return
	}
	now := s.cfg.Now()
	_, took := s.setState(b, redisconn.StateUp, nil, now)
	b.back = now
	b.mu.Unlock()
	s.stateChanged(b, redisconn.StateUp)
	s.log.Info("redis backend failed over, storing again", "backend", b.name, "addr", b.addr, "took", took.Round(time.Millisecond))
}

// writeOne writes batch bt to b. With MinReplicas it writes on one
// connection and then asks that connection to WAIT for the replicas, so
// the WAIT covers the write; a write whose records b held already (it
// wrote nothing) is covered by a small write before the WAIT.
func (s *Sink) writeOne(ctx context.Context, b *backend, bt *store.Buckets) ([]store.Held, error) {
	if s.cfg.MinReplicas <= 0 {
		h, err := s.cfg.Layout.Write(ctx, b.rdb, bt)
		if len(h) > 0 {
			return h, nil
		}
		return h, err
	}
	conn := b.rdb.Conn()
	defer conn.Close()
	one := &oneConn{Client: b.rdb, conn: conn, replicas: s.cfg.MinReplicas, timeout: s.cfg.ReplicaTimeout}
	h, err := s.cfg.Layout.Write(ctx, one, bt)
	if err != nil && len(h) == 0 {
		return nil, err
	}
	if len(h) == 0 && one.waited != nil {
		// The WAIT went in the same round trip as the write script.
		return nil, s.replicated(one.waited.Int64())
	}
	if len(h) > 0 {
		if err := conn.Set(ctx, s.cfg.Layout.ProbeKey(), "", time.Second).Err(); err != nil {
			return nil, err
		}
	}
	if err := s.confirm(ctx, conn); err != nil {
		return nil, err
	}
	return h, nil
}

// probeWrite writes a short-lived key to b, confirmed by MinReplicas
// replicas as a real write is: a backend that cannot replicate stays out.
func (s *Sink) probeWrite(ctx context.Context, b *backend) error {
	if s.cfg.MinReplicas <= 0 {
		return b.rdb.Set(ctx, s.cfg.Layout.ProbeKey(), probeValue, time.Second).Err()
	}
	conn := b.rdb.Conn()
	defer conn.Close()
	if err := conn.Set(ctx, s.cfg.Layout.ProbeKey(), probeValue, time.Second).Err(); err != nil {
		return err
	}
	return s.confirm(ctx, conn)
}

// confirm waits until MinReplicas replicas hold what conn wrote, at most
// ReplicaTimeout.
func (s *Sink) confirm(ctx context.Context, conn *redis.Conn) error {
	return s.replicated(conn.Wait(ctx, s.cfg.MinReplicas, s.cfg.ReplicaTimeout).Result())
}

// replicated judges the answer of a WAIT for MinReplicas replicas.
func (s *Sink) replicated(n int64, err error) error {
	if err != nil {
		return fmt.Errorf("wait for %d replicas: %w", s.cfg.MinReplicas, err)
	}
	if n < int64(s.cfg.MinReplicas) {
		return fmt.Errorf("%w: %d of %d (REDIS_MIN_REPLICAS) within %s", redisconn.ErrNotReplicated, n, s.cfg.MinReplicas, s.cfg.ReplicaTimeout)
	}
	return nil
}

// oneConn is a client whose script and pipeline commands, the ones
// store.Layout.Write sends, run on one connection. A script call is
// pipelined with a WAIT for the replicas, so a write and its confirmation
// take one round trip.
type oneConn struct {
	*redis.Client
	conn     *redis.Conn
	replicas int
	timeout  time.Duration
	waited   *redis.Cmd // the WAIT that followed the last script call
}

func (c *oneConn) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	_, _ = c.conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = p.EvalSha(ctx, sha1, keys, args...)
		c.waited = p.Do(ctx, "wait", c.replicas, c.timeout.Milliseconds())
		return nil
	})
	return cmd
}

func (c *oneConn) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.conn.Eval(ctx, script, keys, args...)
}

func (c *oneConn) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return c.conn.ScriptLoad(ctx, script)
}

func (c *oneConn) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return c.conn.ScriptExists(ctx, hashes...)
}

func (c *oneConn) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return c.conn.Pipelined(ctx, fn)
}
