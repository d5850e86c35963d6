//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/topology"
)

// Shares are checked from Redis, within this many percentage points.
const tolerance = 2.0

// minSample is the number of records a split is measured on.
const minSample = 3000

// outage is how long redis-b stays killed.
const outage = 10 * time.Second

func TestCompose(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "connpipe-e2e")
	stage := s.timedStage
	s.prepare(ctx)

	want := map[string]int{"redis-a": 1, "redis-b": 1, "rabbitmq": 1, "capture": 1, "consumer": 1, "admin": 1, "trafficgen": 3}
	stage("up: every service healthy", func() {
		s.dc(ctx, "up", "-d")
		s.waitHealthy(ctx, 4*time.Minute, want)
		for _, c := range s.containers(ctx) {
			s.logf("%-32s %s %s", c.Name, c.Status, c.Health)
		}
	})

	stage("no container runs as root; capture has NET_RAW alone", func() {
		for _, c := range s.containers(ctx) {
			out := strings.TrimSpace(s.run(ctx, "docker", "inspect", "-f",
				`{{.Config.User}}|{{join .HostConfig.CapAdd ","}}|{{.HostConfig.ReadonlyRootfs}}|{{.HostConfig.Memory}}|{{join .HostConfig.SecurityOpt ","}}`, c.ID))
			f := strings.Split(out, "|")
			user, capAdd := f[0], f[1]
			s.logf("%-32s user %-12s cap_add [%s] read-only %s memory %s security %s", c.Name, user, capAdd, f[2], f[3], f[4])
			if user == "" || user == "0" || user == "root" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:") {
				t.Errorf("%s runs as root (user %q)", c.Name, user)
			}
			if f[3] == "0" {
				t.Errorf("%s has no memory limit", c.Name)
			}
			if c.Service == "capture" && (strings.Contains(capAdd, "NET_ADMIN") || !strings.Contains(capAdd, "NET_RAW")) {
				t.Errorf("capture's added capabilities are [%s], want NET_RAW alone", capAdd)
			}
		}
		// A uid does not say what the process holds: read capture's own.
		capt := s.service(ctx, "capture")
		status := s.dc(ctx, "exec", "-T", "capture", "cat", "/proc/1/status")
		for _, line := range strings.Split(status, "\n") {
			if strings.HasPrefix(line, "Uid:") || strings.HasPrefix(line, "CapEff:") {
				s.logf("capture %s %s", capt[0].Name, strings.Join(strings.Fields(line), " "))
			}
			// CapEff: only bit 13 (CAP_NET_RAW) may be set.
			if f := strings.Fields(line); len(f) == 2 && f[0] == "CapEff:" && f[1] != "0000000000002000" {
				t.Errorf("capture's effective capabilities are %s, want 0000000000002000 (CAP_NET_RAW alone)", f[1])
			}
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && f[1] == "0" {
				t.Errorf("capture's process runs as uid 0")
			}
		}
	})

	s.connectRedis(ctx)
	stage("Redis refuses anonymous clients and admin's writes; each network reaches only its own", func() {
		s.checkRedisLogins(ctx)
		s.checkNetworks(ctx)
	})

	start := s.t0.Unix() - 60
	stage("records split 30/70 from the start", func() {
		s.waitForRecords(ctx, start, minSample)
		s.checkSplit(s.count(ctx, start, time.Now().Unix()+5), 30, tolerance, minSample)
	})

	stage("weights 50/50 with the admin CLI", func() {
		out := s.dc(ctx, "exec", "-T", "admin", "admin", "weights", "set", "redis-a=50", "redis-b=50", "--wait", "30s")
		s.logf("%s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "\n    "))
		s.waitWeights(ctx, "redis-a=50 redis-b=50", 30*time.Second)
		from := time.Now().Unix() + 1
		s.waitForRecords(ctx, from, minSample)
		s.checkSplit(s.count(ctx, from, time.Now().Unix()-1), 50, tolerance, minSample)
	})

	stage("weights 20/80 with amqp-publish", func() {
		s.publishControl(ctx, `{"op":"set_weights","weights":{"redis-a":20,"redis-b":80}}`)
		s.waitWeights(ctx, "redis-a=20 redis-b=80", 30*time.Second)
		from := time.Now().Unix() + 1
		s.waitForRecords(ctx, from, minSample)
		s.checkSplit(s.count(ctx, from, time.Now().Unix()-1), 20, tolerance, minSample)
	})

	stage("admin history: each change, in order, under the operator that made it", func() {
		out := s.dc(ctx, "exec", "-T", "admin", "admin", "history", "--since", "1h")
		s.logf("%s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "\n    "))
		// The CLI's change under ADMIN_TOKEN's operator "admin", then the
		// hand-published one, which names nobody.
		want := regexp.MustCompile(`(?s)\sadmin +v(\d+) +\d+ +weights redis-a=50 redis-b=50\n.*\s- +v\d+ +\d+ +weights redis-a=20 redis-b=80\n`)
		if !want.MatchString(out) {
			t.Errorf("admin history does not list the e2e's changes in order under their operators:\n%s", out)
		}
	})

	stage("scale to three consumers", func() {
		s.dc(ctx, "up", "-d", "--scale", "consumer=3")
		want["consumer"] = 3
		s.waitHealthy(ctx, 3*time.Minute, want)
		s.eventually(2*time.Minute, "three consumers acking and on the current weights", func() error {
			return s.checkConsumers(ctx, 3, "redis-a=20 redis-b=80")
		})
	})

	stage("RabbitMQ away for a minute, Redis killed: nothing lost", func() {
		s.recover(ctx, start, want)
	})

	stage("down -v leaves nothing", func() { s.downLeavesNothing(ctx) })
}

// downLeavesNothing takes the stack down with its volumes and checks that
// nothing of the project is left.
func (s *stack) downLeavesNothing(ctx context.Context) {
	s.t.Helper()
	s.dc(ctx, "down", "-v", "--remove-orphans", "-t", "10")
	left := s.leftovers(ctx)
	if len(left) > 0 {
		s.t.Fatalf("after down -v: %s", strings.Join(left, "; "))
	}
	s.logf("no container, network or volume of project %s is left", s.project)
	os.Remove(s.envFile)
}

// waitForRecords waits until at least n records are stored in buckets from
// the second from on.
func (s *stack) waitForRecords(ctx context.Context, from int64, n int) {
	s.t.Helper()
	s.eventually(2*time.Minute, fmt.Sprintf("%d records stored", n), func() error {
		c := s.count(ctx, from, time.Now().Unix()-1)
		if got := c["redis-a"] + c["redis-b"]; got < n {
			return fmt.Errorf("%d records so far", got)
		}
		return nil
	})
}

// publishControl publishes a control message the way the README shows:
// amqp-publish on the host against the published AMQP port, or, without
// amqp-tools on the host, the same command inside the RabbitMQ container.
func (s *stack) publishControl(ctx context.Context, body string) {
	s.t.Helper()
	args := []string{"-e", topology.ControlExchange, "-C", "application/json", "-b", body}
	// The operator user, which may append to the control log and do
	// nothing else. No trailing slash: amqp-tools read "/" as the vhost
	// named "".
	userinfo := "connpipe-operator:" + s.env["RABBITMQ_OPERATOR_PASSWORD"]
	if _, err := exec.LookPath("amqp-publish"); err == nil {
		s.logf("amqp-publish -u amqp://USER:PASSWORD@127.0.0.1:%s %s", s.env["AMQP_PORT"], strings.Join(args, " "))
		s.run(ctx, "amqp-publish", append([]string{"-u", "amqp://" + userinfo + "@127.0.0.1:" + s.env["AMQP_PORT"]}, args...)...)
		return
	}
	s.logf("(no amqp-publish on this machine) docker compose exec rabbitmq amqp-publish %s", strings.Join(args, " "))
	s.dc(ctx, append([]string{"exec", "-T", "rabbitmq", "amqp-publish", "-u", "amqp://" + userinfo + "@127.0.0.1:5672"}, args...)...)
}

// checkConsumers checks that n consumers run, each has acked messages (its
// own metrics) and reports the weights want (admin's status), and that
// RabbitMQ sees n consumers on the records queue.
func (s *stack) checkConsumers(ctx context.Context, n int, want string) error {
	cs := s.service(ctx, "consumer")
	if len(cs) != n {
		return fmt.Errorf("%d consumer containers", len(cs))
	}
	var lines []string
	for _, c := range cs {
		m := s.metrics(ctx, c, 9101)
		acked := m["connpipe_consumer_messages_acked_total"]
		if acked <= 0 {
			return fmt.Errorf("%s has acked no message yet", c.Name)
		}
		lines = append(lines, fmt.Sprintf("%s acked %.0f messages", c.Name, acked))
	}
	st, err := s.status(ctx)
	if err != nil {
		return err
	}
	alive := 0
	for _, c := range st.Consumers {
		if !c.Alive {
			continue
		}
		alive++
		if c.Weights != want || !c.Converged {
			return fmt.Errorf("consumer %s reports %q (converged %v), want %q", c.ID, c.Weights, c.Converged, want)
		}
		lines = append(lines, fmt.Sprintf("admin: consumer %s on %q version %d, acked %d", c.ID, c.Weights, c.Version, c.Acked))
	}
	if alive != n {
		return fmt.Errorf("admin sees %d live consumers, want %d", alive, n)
	}
	q, err := s.recordsQueue(ctx)
	if err != nil {
		return err
	}
	if q.Consumers != n {
		return fmt.Errorf("RabbitMQ sees %d consumers on conn.records, want %d", q.Consumers, n)
	}
	lines = append(lines, fmt.Sprintf("RabbitMQ: %d consumers on conn.records", q.Consumers))
	for _, l := range lines {
		s.logf("%s", l)
	}
	return nil
}

// recover restarts RabbitMQ and kills and restarts redis-b while traffic
// flows, then stops the traffic, lets the queue drain and checks that Redis
// holds at least every record capture had confirmed.
func (s *stack) recover(ctx context.Context, start int64, want map[string]int) {
	s.t.Helper()
	capt := s.service(ctx, "capture")
	if len(capt) != 1 {
		s.t.Fatalf("%d capture containers", len(capt))
	}
	before := capt[0]
	flowing := func(name string, from int64, min int) func() error {
		return func() error {
			c := s.count(ctx, from, time.Now().Unix()+1, name)
			if c[name] < min {
				return fmt.Errorf("%s holds %d records stored since %s", name, c[name], time.Unix(from, 0).Format(time.TimeOnly))
			}
			return nil
		}
	}

	// The broker away for a minute under load: capture keeps reading and
	// spools what it cannot publish, then drains it.
	t := time.Now()
	s.dc(ctx, "stop", "rabbitmq")
	var spooled float64
	s.eventually(time.Minute, "capture spools while RabbitMQ is down", func() error {
		m := s.metrics(ctx, before, 9100)
		spooled = m["connpipe_capture_spool_records"]
		if spooled == 0 {
			return fmt.Errorf("spool holds %.0f records", spooled)
		}
		return nil
	})
	s.logf("rabbitmq stopped; capture's spool holds %.0f records after %s", spooled, since(t))
	time.Sleep(time.Until(t.Add(brokerOutage())))
	m := s.metrics(ctx, before, 9100)
	s.logf("after %s without RabbitMQ: spool %.0f records, %.0f bytes; kernel drops %.0f",
		since(t), m["connpipe_capture_spool_records"], m["connpipe_capture_spool_bytes"], m["connpipe_capture_kernel_drops_total"])
	t = time.Now()
	s.dc(ctx, "start", "rabbitmq")
	s.waitHealthy(ctx, 3*time.Minute, want)
	s.logf("rabbitmq started and healthy in %s", since(t))
	back := time.Now().Unix() + 1
	s.eventually(2*time.Minute, "records flow after the outage", flowing("redis-b", back, 200))
	s.logf("records flow again %s after the start", since(t))

	t = time.Now()
	s.dc(ctx, "kill", "redis-b")
	down := time.Now().Unix() + 2
	s.eventually(time.Minute, "records go to redis-a while redis-b is down", flowing("redis-a", down, 300))
	s.logf("redis-b killed; redis-a takes the records (%s)", since(t))
	// Keep redis-b down a while, so the outage spans many batches.
	time.Sleep(time.Until(t.Add(outage)))
	t = time.Now()
	downEnd := t.Unix() - 1
	s.dc(ctx, "start", "redis-b")
	s.waitHealthy(ctx, 2*time.Minute, want)
	s.connectRedis(ctx)
	up := time.Now().Unix() + 1
	s.eventually(2*time.Minute, "redis-b back in rotation", flowing("redis-b", up, 200))
	s.logf("redis-b started and back in rotation in %s", since(t))
	// While redis-b was down its share (80) went to redis-a.
	c := s.count(ctx, down, downEnd)
	share := 100 * float64(c["redis-a"]) / float64(max(1, c["redis-a"]+c["redis-b"]))
	s.logf("records captured while redis-b was down: redis-a %d, redis-b %d (%.1f%% to redis-a, weight 20)", c["redis-a"], c["redis-b"], share)
	if c["redis-a"] == 0 || share < 50 {
		s.t.Fatalf("redis-a holds %.1f%% of the %d records captured while redis-b was down: redis-b's share did not move to it", share, c["redis-a"]+c["redis-b"])
	}

	s.dc(ctx, "stop", "trafficgen")
	tot := s.drain(ctx, []container{before})[0]
	confirmed := tot.confirmed

	after := s.service(ctx, "capture")
	if len(after) != 1 || after[0].ID != before.ID || after[0].Restarts != before.Restarts {
		s.t.Fatalf("capture was restarted during the run: its counters do not cover it (before %+v, after %+v)", before, after)
	}
	for _, c := range s.containers(ctx) {
		if c.Restarts > 0 {
			s.logf("%s was restarted %d times by Docker", c.Name, c.Restarts)
		}
	}
	if dead, err := s.queueDepth(ctx, "conn.records.dead"); err != nil || dead != 0 {
		s.logf("dead-letter queue conn.records.dead: %d messages (err %v)", dead, err)
	}
	c = s.count(ctx, start, time.Now().Unix()+5)
	stored := c["redis-a"] + c["redis-b"]
	distinct := map[string]bool{}
	for _, name := range []string{"redis-a", "redis-b"} {
		s.read(ctx, name, start, time.Now().Unix()+5, func(r *record.Record) { distinct[r.String()] = true })
	}
	s.logf("capture confirmed %.0f records (published %.0f); Redis holds %d (redis-a %d, redis-b %d), %d distinct",
		confirmed, tot.published, stored, c["redis-a"], c["redis-b"], len(distinct))
	if confirmed < minSample {
		s.t.Fatalf("capture confirmed only %.0f records", confirmed)
	}
	// Every packet capture counted as a record, the broker outage
	// included, is stored, and stored once: what was sent again after the
	// outage (unconfirmed batches, redeliveries) was recognised.
	records := tot.records()
	skipped := 0.0
	for _, c := range s.service(ctx, "consumer") {
		skipped += s.metrics(ctx, c, 9101)["connpipe_consumer_duplicates_skipped_total"]
	}
	s.logf("capture counted %.0f packets, %.0f of them records (%.0f filtered or malformed; kernel drops %.0f); Redis holds %d records; consumers skipped %.0f duplicates",
		tot.packets, records, tot.notRecords, tot.drops, stored, skipped)
	if tot.drops != 0 {
		s.t.Fatalf("kernel drops %.0f: the count is void", tot.drops)
	}
	if float64(stored) != records || len(distinct) != stored {
		s.t.Fatalf("Redis holds %d records (%d distinct) for the %.0f capture counted: want exactly as many, each once", stored, len(distinct), records)
	}
}

// captureTotals are a capture's counters once all it read is through.
type captureTotals struct {
	confirmed, published, packets, drops float64
	notRecords                           float64 // packets that are no record: the filter's and the malformed
}

func (c captureTotals) records() float64 { return c.packets - c.notRecords }

// drain waits until the captures have nothing in flight or spooled and the
// records queue is empty, the same in two readings in a row, and returns
// each capture's counters then.
func (s *stack) drain(ctx context.Context, captures []container) []captureTotals {
	s.t.Helper()
	totals := make([]captureTotals, len(captures))
	var last string
	s.eventually(3*time.Minute, "the records queue drains", func() error {
		q, err := s.recordsQueue(ctx)
		if err != nil {
			return err
		}
		now := fmt.Sprintf("queued %d", q.Messages)
		busy := q.Messages != 0
		for i, c := range captures {
			m := s.metrics(ctx, c, 9100)
			now += fmt.Sprintf("; %s confirmed %.0f published %.0f in flight %.0f spooled %.0f", c.Name,
				m["connpipe_capture_records_confirmed_total"], m["connpipe_capture_records_published_total"],
				m["connpipe_capture_in_flight"], m["connpipe_capture_spool_records"])
			busy = busy || m["connpipe_capture_in_flight"] != 0 || m["connpipe_capture_spool_records"] != 0
			totals[i] = captureTotals{
				confirmed: m["connpipe_capture_records_confirmed_total"], published: m["connpipe_capture_records_published_total"],
				packets: m["connpipe_capture_packets_total"], drops: m["connpipe_capture_kernel_drops_total"],
				notRecords: m["connpipe_capture_filtered_total"] + m["connpipe_capture_decode_errors_total"],
			}
		}
		stable := now == last
		last = now
		if !stable || busy {
			return errors.New(now)
		}
		return nil
	})
	return totals
}

// brokerOutage is how long the broker stays stopped
// (CONNPIPE_E2E_BROKER_OUTAGE, default 60s).
func brokerOutage() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CONNPIPE_E2E_BROKER_OUTAGE")); err == nil && d > 0 {
		return d
	}
	return time.Minute
}

// removeProject removes whatever an earlier run of the project left.
func (s *stack) removeProject(ctx context.Context) {
	s.t.Helper()
	if _, err := os.Stat(s.envFile); err == nil {
		s.tryDC(ctx, "down", "-v", "--remove-orphans", "-t", "5")
		os.Remove(s.envFile)
	}
	label := "label=com.docker.compose.project=" + s.project
	if ids := strings.Fields(s.run(ctx, "docker", "ps", "-a", "-q", "--filter", label)); len(ids) > 0 {
		s.run(ctx, "docker", append([]string{"rm", "-f", "-v"}, ids...)...)
	}
	if ids := strings.Fields(s.run(ctx, "docker", "network", "ls", "-q", "--filter", label)); len(ids) > 0 {
		s.run(ctx, "docker", append([]string{"network", "rm"}, ids...)...)
	}
	if ids := strings.Fields(s.run(ctx, "docker", "volume", "ls", "-q", "--filter", label)); len(ids) > 0 {
		s.run(ctx, "docker", append([]string{"volume", "rm"}, ids...)...)
	}
	if left := s.leftovers(ctx); len(left) > 0 {
		s.t.Fatalf("cannot clean up project %s: %s", s.project, strings.Join(left, "; "))
	}
}

// leftovers lists the project's containers, networks and volumes.
func (s *stack) leftovers(ctx context.Context) []string {
	s.t.Helper()
	label := "label=com.docker.compose.project=" + s.project
	var left []string
	for _, q := range [][]string{
		{"ps", "-a", "--format", "{{.Names}}", "--filter", label},
		{"network", "ls", "--format", "{{.Name}}", "--filter", label},
		{"volume", "ls", "--format", "{{.Name}}", "--filter", label},
		{"network", "ls", "--format", "{{.Name}}", "--filter", "name=^" + s.project + "_"},
		{"volume", "ls", "--format", "{{.Name}}", "--filter", "name=^" + s.project + "_"},
	} {
		if out := strings.Fields(s.run(ctx, "docker", q...)); len(out) > 0 {
			left = append(left, q[0]+": "+strings.Join(out, " "))
		}
	}
	return left
}

// removeImages removes connpipe's images (and their build cache) so the
// images stage builds from a clean state.
func (s *stack) removeImages(ctx context.Context) {
	s.t.Helper()
	out := s.run(ctx, "docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
	var rm []string
	for _, img := range strings.Fields(out) {
		if strings.HasPrefix(img, "connpipe/") {
			rm = append(rm, img)
		}
	}
	if len(rm) > 0 {
		s.logf("removing %s", strings.Join(rm, " "))
		s.run(ctx, "docker", append([]string{"image", "rm", "-f"}, rm...)...)
	}
	// Build stages and dangling images inherit the base's label.
	s.run(ctx, "docker", "image", "prune", "-f", "--filter", "label=org.connpipe.image=true")
}
