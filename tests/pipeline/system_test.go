package pipeline

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
)

const token = "test-token"

// system is one connpipe deployment on this machine.
type system struct {
	t         testing.TB
	amqp      string
	prefix    string
	redis     []string // redis-a, redis-b
	port      int      // capture's listen port
	env       map[string]string
	capture   *proc
	capAddr   string
	consumers []*consumer
	admin     *proc
	adminAddr string
	adminOps  string // admin's METRICS_ADDR
}

type consumer struct {
	*proc
	addr string
}

func newSystem(t testing.TB, env map[string]string) *system {
	t.Helper()
	s := &system{t: t, amqp: testenv.AMQP(t), prefix: testenv.Prefix(t), redis: testenv.Redis(t, 2), port: freePort(t)}
	s.env = map[string]string{
		"AMQP_URL":     s.amqp,
		"BACKENDS":     fmt.Sprintf("redis-a=%s,redis-b=%s", s.redis[0], s.redis[1]),
		"WEIGHTS":      "redis-a=30,redis-b=70",
		"REDIS_PREFIX": s.prefix,
		"RETENTION":    "5m",
	}
	for k, v := range env {
		s.env[k] = v
	}
	return s
}

func (s *system) with(extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range s.env {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func (s *system) startCapture() {
	s.t.Helper()
	s.capAddr = fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	s.capture = start(s.t, "capture", "capture", s.with(map[string]string{
		"INTERFACE": "lo", "LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", s.port), "SINK": "true",
		"METRICS_ADDR": s.capAddr,
	}))
	waitFor(s.t, 20*time.Second, "capture healthy", func() (bool, string) {
		return healthy(s.capAddr), "healthz not ok"
	})
}

func (s *system) startConsumer(name string) *consumer {
	s.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	c := &consumer{proc: start(s.t, name, "consumer", s.with(map[string]string{
		"METRICS_ADDR": addr, "CONSUMER_ID": name, "HEARTBEAT_INTERVAL": "200ms",
	})), addr: addr}
	waitFor(s.t, 20*time.Second, name+" healthy", func() (bool, string) {
		return healthy(addr), "healthz not ok"
	})
	s.consumers = append(s.consumers, c)
	return c
}

func (s *system) startAdmin() {
	s.t.Helper()
	s.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	s.adminOps = fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	s.admin = start(s.t, "admin", "admin", s.with(map[string]string{
		"HTTP_ADDR": s.adminAddr, "METRICS_ADDR": s.adminOps, "ADMIN_TOKEN": token, "CONSUMER_TIMEOUT": "2s",
	}), "serve")
	waitFor(s.t, 20*time.Second, "admin healthy", func() (bool, string) {
		return healthy(s.adminAddr), "healthz not ok"
	})
}

// cli runs the admin CLI against the running admin.
func (s *system) cli(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "admin"), args...)
	cmd.Env = []string{"ADMIN_URL=http://" + s.adminAddr, "ADMIN_TOKEN=" + token}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// split is what one consumer reports it stored on each backend.
func (c *consumer) split(t testing.TB) (a, b float64) {
	m, err := metrics(c.addr)
	if err != nil {
		t.Fatalf("scrape %s: %v", c.name, err)
	}
	return m[`connpipe_consumer_records_stored_total{backend="redis-a"}`], m[`connpipe_consumer_records_stored_total{backend="redis-b"}`]
}

// storedAll reads every record of this system from both instances.
func (s *system) storedAll() (a, b []record.Record) {
	return stored(s.t, s.redis[0], s.prefix, 10*time.Minute), stored(s.t, s.redis[1], s.prefix, 10*time.Minute)
}

// exact checks that n records split by weight wa:wb give a within one
// record of its exact share, as smooth weighted round-robin guarantees.
func exact(t testing.TB, who string, a, b float64, wa, wb int) {
	t.Helper()
	n := a + b
	want := n * float64(wa) / float64(wa+wb)
	if n == 0 || math.Abs(a-want) > 1 {
		t.Errorf("%s: %v to redis-a and %v to redis-b; want redis-a within 1 of %.1f (%d:%d)", who, a, b, want, wa, wb)
	}
}

func asSeen(rs []record.Record) map[seen]int {
	m := map[seen]int{}
	for _, r := range rs {
		m[seen{Src: r.Src, SrcPort: r.SrcPort, Flags: r.Flags}]++
	}
	return m
}

// sameAsKernel checks that the stored records are exactly the packets the
// kernel counter saw: the same multiset of (source, port, flags).
func sameAsKernel(t testing.TB, k []seen, stored []record.Record) {
	t.Helper()
	want := map[seen]int{}
	for _, p := range k {
		want[p]++
	}
	got := asSeen(stored)
	var missing, extra []string
	for p, n := range want {
		if got[p] < n {
			missing = append(missing, fmt.Sprintf("%v:%d flags %#x ×%d", p.Src, p.SrcPort, p.Flags, n-got[p]))
		}
	}
	for p, n := range got {
		if want[p] < n {
			extra = append(extra, fmt.Sprintf("%v:%d flags %#x ×%d", p.Src, p.SrcPort, p.Flags, n-want[p]))
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("kernel saw %d packets, Redis holds %d records; missing %d %s; extra %d %s",
			len(k), len(stored), len(missing), first(missing), len(extra), first(extra))
	}
}

func first(s []string) string {
	if len(s) > 5 {
		s = s[:5]
	}
	return strings.Join(s, ", ")
}
