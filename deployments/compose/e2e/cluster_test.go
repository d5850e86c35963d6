//go:build e2e && cluster

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// flowDeadline is how soon after a node is killed records must be stored
// again.
const flowDeadline = 30 * time.Second

// clusterCaptures are the cluster stack's captures and the port each
// records (the port its generators send to).
var clusterCaptures = []struct {
	service string
	port    uint16
}{{"capture", 7000}, {"capture-2", 7001}}

// replicated are the queues that must have a replica on every node.
var replicated = []string{"conn.records", "conn.control", "conn.control.snapshots"}

// TestComposeCluster runs the stack with a three-node RabbitMQ cluster and
// two captures (deployments/compose/cluster.yml), kills the node leading
// conn.records under load and brings it back, and checks that records kept
// flowing, that a weight change made meanwhile reached every consumer,
// that no client was restarted and that every record each capture counted
// is stored.
func TestComposeCluster(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "connpipe-cluster", "deployments/compose/cluster.yml")
	stage := s.timedStage
	s.prepareBeside(ctx)

	want := map[string]int{"redis-a": 1, "redis-b": 1, "rabbitmq": 1, "rabbitmq-2": 1, "rabbitmq-3": 1,
		"capture": 1, "capture-2": 1, "consumer": 2, "admin": 1, "trafficgen": 3, "trafficgen-2": 1}
	stage("up: three RabbitMQ nodes, two captures, healthy", func() {
		s.dc(ctx, "up", "-d", "--scale", "consumer=2")
		s.waitHealthy(ctx, 6*time.Minute, want)
		for _, c := range s.containers(ctx) {
			s.logf("%-36s %s %s", c.Name, c.Status, c.Health)
		}
	})

	stage("one cluster of 3; queue and streams on all 3", func() {
		s.eventually(time.Minute, "one cluster of three running nodes", func() error { return s.checkCluster(ctx, 3) })
		s.eventually(time.Minute, "the queue and the streams on three nodes", func() error { return s.checkReplicas(ctx, 3) })
	})

	s.connectRedis(ctx)
	start := s.t0.Unix() - 60
	stage("two captures: both in status, both stored", func() {
		s.eventually(2*time.Minute, "both captures in admin's status and in Redis", func() error {
			return s.checkCaptures(ctx, start)
		})
	})

	clients := s.clients(ctx)
	var down string
	stage("kill the node leading conn.records", func() {
		q, err := s.recordsQueue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		down = strings.TrimPrefix(q.Leader, "rabbit@")
		if want[down] != 1 {
			t.Fatalf("conn.records is led by %q, not one of the nodes", q.Leader)
		}
		s.dc(ctx, "kill", down)
		killed := time.Now()
		s.logf("killed %s, the leader of conn.records", down)
		// Records flow again as soon as records captured after the kill are
		// stored; each capture's own resume the moment it has moved to
		// another node, which a client whose node vanished without a word
		// learns from the missing heartbeats.
		from := killed.Unix() + 1
		resumed := map[string]time.Duration{}
		s.eventually(2*time.Minute, "records of each capture stored after the kill", func() error {
			stored := s.countByPort(ctx, from, time.Now().Unix()+1)
			total := 0
			var missing []string
			for _, c := range clusterCaptures {
				total += stored[c.port]
				if _, ok := resumed[c.service]; !ok && stored[c.port] >= 100 {
					resumed[c.service] = since(killed)
				}
				if _, ok := resumed[c.service]; !ok {
					missing = append(missing, fmt.Sprintf("%s: %d", c.service, stored[c.port]))
				}
			}
			if _, ok := resumed["all"]; !ok && total >= 100 {
				resumed["all"] = since(killed)
			}
			if len(missing) > 0 {
				return fmt.Errorf("records stored since the kill: %s", strings.Join(missing, ", "))
			}
			return nil
		})
		s.logf("records stored again %s after the kill (limit %s); %s's %s, %s's %s",
			resumed["all"], flowDeadline, clusterCaptures[0].service, resumed[clusterCaptures[0].service],
			clusterCaptures[1].service, resumed[clusterCaptures[1].service])
		if resumed["all"] > flowDeadline {
			t.Fatalf("records were stored again only %s after the kill, want within %s", resumed["all"], flowDeadline)
		}
		s.eventually(time.Minute, "a new leader on the two nodes left", func() error {
			q, err := s.recordsQueue(ctx)
			if err != nil {
				return err
			}
			if q.Leader == "" || q.Leader == "rabbit@"+down || len(q.Online) != 2 {
				return fmt.Errorf("conn.records: leader %q, online %v", q.Leader, q.Online)
			}
			s.logf("conn.records led by %s, online %s", q.Leader, strings.Join(q.Online, " "))
			return nil
		})
	})

	stage("weights 50/50 while a node is down", func() {
		acked := map[string]float64{}
		for _, c := range s.service(ctx, "consumer") {
			acked[c.Name] = s.metrics(ctx, c, 9101)["connpipe_consumer_messages_acked_total"]
		}
		// admin may still be dialling another node for the control log:
		// a stream whose replica on that node has not caught up after the
		// kill refuses consumers for a while (PRECONDITION_FAILED), and
		// admin answers a change with 503 until it is back, as an
		// operator would see and retry.
		waited := time.Now()
		s.eventually(time.Minute, "admin connected to the control log", func() error {
			st, err := s.status(ctx)
			if err != nil {
				return err
			}
			if !st.Connected {
				return fmt.Errorf("admin's control log session: %s", st.Session)
			}
			return nil
		})
		s.logf("admin's control log connected (%s after the stage began)", time.Since(waited).Round(100*time.Millisecond))
		out := s.dc(ctx, "exec", "-T", "admin", "admin", "weights", "set", "redis-a=50", "redis-b=50", "--wait", "60s")
		s.logf("%s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "\n    "))
		st := s.waitWeights(ctx, "redis-a=50 redis-b=50", time.Minute)
		alive := 0
		for _, c := range st.Consumers {
			if c.Alive {
				alive++
				s.logf("admin: consumer %s on %q version %d", c.ID, c.Weights, c.Version)
			}
		}
		if alive != 2 {
			t.Fatalf("admin sees %d live consumers, want 2", alive)
		}
		from := time.Now().Unix() + 1
		s.waitForRecords(ctx, from, minSample)
		s.checkSplit(s.count(ctx, from, time.Now().Unix()-1), 50, tolerance, minSample)
		for _, c := range s.service(ctx, "consumer") {
			now := s.metrics(ctx, c, 9101)["connpipe_consumer_messages_acked_total"]
			s.logf("%s acked %.0f messages while %s was down", c.Name, now-acked[c.Name], down)
			if now <= acked[c.Name] {
				t.Fatalf("%s acked nothing while %s was down", c.Name, down)
			}
		}
		for _, c := range s.service(ctx, down) {
			if c.Status == "running" {
				t.Fatalf("%s runs again: the change was not made while it was down", c.Name)
			}
		}
	})

	stage("the node returns and rejoins", func() {
		back := time.Now()
		s.dc(ctx, "start", down)
		// Back in the cluster is what counts; its health check waits on
		// top of that for the role users, set again at every start.
		s.eventually(5*time.Minute, "one cluster of three running nodes", func() error { return s.checkCluster(ctx, 3) })
		s.eventually(2*time.Minute, "the queue and the streams on three nodes", func() error { return s.checkReplicas(ctx, 3) })
		s.logf("%s back in the cluster and every replica online %s after its start", down, since(back))
	})

	stage("no client restarted; every record stored", func() {
		s.checkNotRestarted(ctx, clients)
		s.dc(ctx, "stop", "trafficgen", "trafficgen-2")
		var captures []container
		for _, c := range clusterCaptures {
			captures = append(captures, s.service(ctx, c.service)...)
		}
		totals := s.drain(ctx, captures)
		stored := s.countByPort(ctx, start, time.Now().Unix()+5)
		all := 0
		for _, n := range stored {
			all += n
		}
		for i, c := range clusterCaptures {
			tot := totals[i]
			s.logf("%s (port %d): %.0f packets, %.0f records (%.0f filtered or malformed, kernel drops %.0f), confirmed %.0f; Redis holds %d (%.1f%% of all)",
				c.service, c.port, tot.packets, tot.records(), tot.notRecords, tot.drops, tot.confirmed,
				stored[c.port], 100*float64(stored[c.port])/float64(max(1, all)))
			if tot.records() < minSample/10 {
				t.Errorf("%s counted only %.0f records", c.service, tot.records())
			}
			if float64(stored[c.port]) < tot.records() || tot.drops != 0 {
				t.Errorf("Redis holds %d records for %s of the %.0f it counted (kernel drops %.0f): %.0f lost",
					stored[c.port], c.service, tot.records(), tot.drops, tot.records()-float64(stored[c.port]))
			}
			delete(stored, c.port)
		}
		if len(stored) > 0 {
			t.Errorf("Redis holds records for ports no capture records: %v", stored)
		}
	})

	stage("down -v leaves nothing", func() { s.downLeavesNothing(ctx) })
}

// onBroker runs a command in the first of the broker nodes that runs it.
func (s *stack) onBroker(ctx context.Context, cmd ...string) (string, error) {
	var errs []string
	for _, node := range s.brokerNodes() {
		name, args := s.composeArgs(append([]string{"exec", "-T", node}, cmd...)...)
		out, err := s.try(ctx, name, args...)
		if err == nil {
			return out, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", node, err))
	}
	return "", fmt.Errorf("%s: %s", strings.Join(cmd, " "), strings.Join(errs, "; "))
}

// checkCluster checks that rabbitmq-diagnostics reports one cluster of n
// nodes, all running, with no partition.
func (s *stack) checkCluster(ctx context.Context, n int) error {
	out, err := s.onBroker(ctx, "rabbitmq-diagnostics", "-q", "cluster_status", "--formatter", "json")
	if err != nil {
		return err
	}
	var cs struct {
		ClusterName string          `json:"cluster_name"`
		DiskNodes   []string        `json:"disk_nodes"`
		Running     []string        `json:"running_nodes"`
		Partitions  json.RawMessage `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		return fmt.Errorf("cluster_status: %v: %s", err, tail(out, 5))
	}
	sort.Strings(cs.Running)
	if len(cs.DiskNodes) != n || len(cs.Running) != n {
		return fmt.Errorf("cluster %s: nodes %v, running %v", cs.ClusterName, cs.DiskNodes, cs.Running)
	}
	if p := strings.TrimSpace(string(cs.Partitions)); p != "" && p != "{}" && p != "[]" && p != "null" {
		return fmt.Errorf("cluster %s: partitions %s", cs.ClusterName, p)
	}
	s.logf("rabbitmq-diagnostics cluster_status: cluster %s, running nodes %s", cs.ClusterName, strings.Join(cs.Running, " "))
	return nil
}

// checkReplicas checks that conn.records and the control streams each have
// n members, all online.
func (s *stack) checkReplicas(ctx context.Context, n int) error {
	qs, err := s.queues(ctx)
	if err != nil {
		return err
	}
	for _, name := range replicated {
		q, ok := qs[name]
		if !ok {
			return fmt.Errorf("no queue %s", name)
		}
		if len(q.Members) != n || len(q.Online) != n {
			return fmt.Errorf("%s (%s): members %v, online %v", name, q.Type, q.Members, q.Online)
		}
	}
	for _, name := range replicated {
		q := qs[name]
		s.logf("rabbitmqctl list_queues: %-24s %-7s leader %s, members %s, online %d", name, q.Type, q.Leader, strings.Join(q.Members, " "), len(q.Online))
	}
	return nil
}

// checkCaptures checks that admin's status lists each capture by its name,
// read without error, and that Redis holds records of each.
func (s *stack) checkCaptures(ctx context.Context, from int64) error {
	st, err := s.status(ctx)
	if err != nil {
		return err
	}
	stored := s.countByPort(ctx, from, time.Now().Unix()+1)
	var lines []string
	for _, c := range clusterCaptures {
		found := false
		for _, sc := range st.Captures {
			if sc.Name != c.service {
				continue
			}
			if sc.Error != "" || sc.Packets == 0 {
				return fmt.Errorf("admin's status: capture %s (%s): %.0f packets, error %q", sc.Name, sc.Addr, sc.Packets, sc.Error)
			}
			found = true
			lines = append(lines, fmt.Sprintf("admin's status: capture %s at %s, %.0f packets, %.0f records confirmed", sc.Name, sc.Addr, sc.Packets, sc.Confirmed))
		}
		if !found {
			return fmt.Errorf("admin's status lists no capture %s (captures: %+v)", c.service, st.Captures)
		}
		if stored[c.port] < 200 {
			return fmt.Errorf("Redis holds %d records sent to port %d (%s); by destination port: %v", stored[c.port], c.port, c.service, stored)
		}
		lines = append(lines, fmt.Sprintf("Redis: %d records sent to %s's port %d", stored[c.port], c.service, c.port))
	}
	if len(st.Captures) != len(clusterCaptures) {
		return fmt.Errorf("admin's status lists %d captures, want %d", len(st.Captures), len(clusterCaptures))
	}
	for _, l := range lines {
		s.logf("%s", l)
	}
	return nil
}

// countByPort counts the records stored in buckets from..to in both Redis
// instances by their destination port: by the capture that recorded them.
func (s *stack) countByPort(ctx context.Context, from, to int64) map[uint16]int {
	s.t.Helper()
	out := map[uint16]int{}
	for _, name := range []string{"redis-a", "redis-b"} {
		s.read(ctx, name, from, to, func(r *record.Record) { out[r.DstPort]++ })
	}
	return out
}

// clients are the containers of every service but the broker nodes.
func (s *stack) clients(ctx context.Context) map[string]container {
	out := map[string]container{}
	for _, c := range s.containers(ctx) {
		if !strings.HasPrefix(c.Service, "rabbitmq") {
			out[c.Name] = c
		}
	}
	return out
}

// checkNotRestarted checks that every client container is the one seen
// before, started at the same time, with no restart since.
func (s *stack) checkNotRestarted(ctx context.Context, before map[string]container) {
	s.t.Helper()
	now := s.clients(ctx)
	for name, b := range before {
		c, ok := now[name]
		switch {
		case !ok:
			s.t.Errorf("%s is gone", name)
		case c.ID != b.ID || c.Started != b.Started || c.Restarts != b.Restarts || c.Status != "running":
			s.t.Errorf("%s was restarted: before %s started %s (%d restarts), now %s started %s (%d restarts), %s",
				name, b.ID[:12], b.Started, b.Restarts, c.ID[:12], c.Started, c.Restarts, c.Status)
		}
	}
	if len(now) != len(before) {
		s.t.Errorf("%d client containers, %d before", len(now), len(before))
	}
	s.logf("none of the %d client containers was restarted (same containers, start times and restart counts)", len(before))
}
