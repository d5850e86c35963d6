//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// stack drives one compose project.
type stack struct {
	t       *testing.T
	root    string   // repository root
	project string   // compose project name
	envFile string   // the project's env file
	compose []string // "docker compose" or "docker-compose"
	files   []string // compose files, relative to root
	env     map[string]string
	rdbs    map[string]*redis.Client
	t0      time.Time
	timings []string // each stage's duration, printed at the end
}

// newStack drives the project $CONNPIPE_E2E_PROJECT, else project, from
// docker-compose.yml and the extra compose files given. It checks that the
// Docker engine answers, and at the end of the test prints the stage
// timings and, after a failure, the stack's state, and removes the stack
// (unless CONNPIPE_E2E_KEEP=1).
func newStack(t *testing.T, project string, files ...string) *stack {
	ctx := context.Background()
	if p := os.Getenv("CONNPIPE_E2E_PROJECT"); p != "" {
		project = p
	}
	s := &stack{
		t:       t,
		root:    repoRoot(t),
		project: project,
		envFile: filepath.Join(os.TempDir(), project+".env"),
		compose: composeCommand(t),
		files:   append([]string{"docker-compose.yml"}, files...),
		rdbs:    map[string]*redis.Client{},
		t0:      time.Now(),
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("the Docker engine does not answer (docker info: %v): %s", err, out)
	}
	fmt.Printf("compose: %s, project %s, files %s, env file %s\n", strings.Join(s.compose, " "), s.project, strings.Join(s.files, " "), s.envFile)
	t.Cleanup(func() {
		if t.Failed() {
			s.dump(ctx)
			if os.Getenv("CONNPIPE_E2E_KEEP") == "1" {
				name, args := s.composeArgs("down", "-v")
				fmt.Printf("\nthe stack is left running: %s %s\n", name, strings.Join(args, " "))
				return
			}
			s.tryDC(ctx, "down", "-v", "--remove-orphans", "-t", "5")
		}
		for _, rdb := range s.rdbs {
			rdb.Close()
		}
		fmt.Printf("\nstage timings (total %s):\n%s\n", since(s.t0), strings.Join(s.timings, "\n"))
	})
	return s
}

// timedStage runs a stage and keeps its duration for the summary.
func (s *stack) timedStage(name string, fn func()) {
	s.t.Helper()
	start := time.Now()
	s.stage(name, fn)
	s.timings = append(s.timings, fmt.Sprintf("  %-44s %s", name, since(start)))
}

// prepare removes what an earlier run left and builds the images offline
// (CONNPIPE_E2E_FRESH=1: from scratch), writing the project's env file with
// the settings given (KEY=VALUE) on top of the defaults.
func (s *stack) prepare(ctx context.Context, settings ...string) {
	s.t.Helper()
	s.timedStage("clean up an earlier run", func() { s.removeProject(ctx) })
	s.timedStage("images (offline)", func() {
		if os.Getenv("CONNPIPE_E2E_FRESH") == "1" {
			s.removeImages(ctx)
		}
		s.logf("env file %s", s.envFile)
		s.run(ctx, filepath.Join(s.root, "deployments/compose/env.sh"), "init", s.envFile)
		// Nothing may expire during the run: the last stage counts every
		// record since the start.
		s.run(ctx, filepath.Join(s.root, "deployments/compose/env.sh"), append([]string{"set", s.envFile,
			"COMPOSE_PROJECT_NAME=" + s.project, "RETENTION=1h"}, settings...)...)
		cmd := exec.CommandContext(ctx, filepath.Join(s.root, "deployments/compose/images.sh"), s.envFile)
		cmd.Dir = s.root
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		if err := cmd.Run(); err != nil {
			s.t.Fatalf("images.sh: %v", err)
		}
		env, err := readEnv(s.envFile)
		if err != nil {
			s.t.Fatal(err)
		}
		s.env = env
		for _, k := range []string{"REDIS_IMAGE", "RABBITMQ_IMAGE", "CAPTURE_IMAGE", "CONSUMER_IMAGE", "ADMIN_IMAGE", "TRAFFICGEN_IMAGE"} {
			if !strings.HasPrefix(s.env[k], "connpipe/") {
				s.t.Fatalf("%s=%q: want a locally built image", k, s.env[k])
			}
		}
	})
}

// prepareBeside is prepare with host ports of the stack's own (AMQP, the
// management UI, admin), so that it can run beside another stack whose env
// file was written at the same time.
func (s *stack) prepareBeside(ctx context.Context, settings ...string) {
	s.t.Helper()
	ports := freePorts(s.t, 3)
	s.prepare(ctx, append([]string{"AMQP_PORT=" + ports[0], "RABBITMQ_MGMT_PORT=" + ports[1], "ADMIN_PORT=" + ports[2]}, settings...)...)
}

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// composeCommand is $COMPOSE, else "docker compose" when it answers, else
// docker-compose.
func composeCommand(t *testing.T) []string {
	if c := strings.Fields(os.Getenv("COMPOSE")); len(c) > 0 {
		return c
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	t.Fatal("neither docker compose nor docker-compose is installed")
	return nil
}

// stage runs one step of the test and prints its duration.
func (s *stack) stage(name string, fn func()) {
	s.t.Helper()
	start := time.Now()
	fmt.Printf("\n=== stage %s (t+%s)\n", name, since(s.t0))
	ok := false
	defer func() {
		verdict := "ok"
		if !ok {
			verdict = "FAILED"
		}
		fmt.Printf("--- stage %s: %s in %s\n", name, verdict, since(start))
	}()
	fn()
	ok = true
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

func (s *stack) logf(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}

// run runs a command in the repository root and returns its stdout; it
// fails the test on error, with stderr.
func (s *stack) run(ctx context.Context, name string, args ...string) string {
	s.t.Helper()
	out, err := s.try(ctx, name, args...)
	if err != nil {
		s.t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func (s *stack) try(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s", err, tail(stderr.String(), 40))
	}
	return stdout.String(), nil
}

// composeArgs is the compose command line for this project.
func (s *stack) composeArgs(args ...string) (string, []string) {
	all := append([]string{}, s.compose[1:]...)
	all = append(all, "--project-name", s.project, "--env-file", s.envFile)
	for _, f := range s.files {
		all = append(all, "--file", filepath.Join(s.root, f))
	}
	all = append(all, "--project-directory", s.root)
	return s.compose[0], append(all, args...)
}

func (s *stack) dc(ctx context.Context, args ...string) string {
	s.t.Helper()
	name, all := s.composeArgs(args...)
	return s.run(ctx, name, all...)
}

func (s *stack) tryDC(ctx context.Context, args ...string) (string, error) {
	name, all := s.composeArgs(args...)
	return s.try(ctx, name, all...)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readEnv parses KEY=VALUE lines.
func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// container is one container of the project.
type container struct {
	ID, Service, Name, Status, Health string
	Number                            int
	Restarts                          int
	Started                           string // when its process last started
}

func (s *stack) containers(ctx context.Context) []container {
	s.t.Helper()
	out := s.run(ctx, "docker", "ps", "-a", "-q", "--filter", "label=com.docker.compose.project="+s.project)
	ids := strings.Fields(out)
	if len(ids) == 0 {
		return nil
	}
	format := `{{.Id}}|{{index .Config.Labels "com.docker.compose.service"}}|{{.Name}}|{{.State.Status}}|` +
		`{{if index .State "Health"}}{{.State.Health.Status}}{{end}}|{{index .Config.Labels "com.docker.compose.container-number"}}|{{.RestartCount}}|{{.State.StartedAt}}`
	out = s.run(ctx, "docker", append([]string{"inspect", "-f", format}, ids...)...)
	var cs []container
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 8 {
			continue
		}
		n, _ := strconv.Atoi(f[5])
		r, _ := strconv.Atoi(f[6])
		cs = append(cs, container{ID: f[0], Service: f[1], Name: strings.TrimPrefix(f[2], "/"), Status: f[3], Health: f[4],
			Number: n, Restarts: r, Started: f[7]})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Service != cs[j].Service {
			return cs[i].Service < cs[j].Service
		}
		return cs[i].Number < cs[j].Number
	})
	return cs
}

func (s *stack) service(ctx context.Context, name string) []container {
	var out []container
	for _, c := range s.containers(ctx) {
		if c.Service == name {
			out = append(out, c)
		}
	}
	return out
}

// waitHealthy waits until every container of the project runs, and those
// with a healthcheck are healthy; want gives the number of containers each
// named service must have.
func (s *stack) waitHealthy(ctx context.Context, timeout time.Duration, want map[string]int) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		cs := s.containers(ctx)
		count := map[string]int{}
		var bad []string
		for _, c := range cs {
			count[c.Service]++
			if c.Status != "running" || (c.Health != "" && c.Health != "healthy") {
				bad = append(bad, fmt.Sprintf("%s=%s/%s", c.Name, c.Status, c.Health))
			}
		}
		for svc, n := range want {
			if count[svc] != n {
				bad = append(bad, fmt.Sprintf("%s has %d containers, want %d", svc, count[svc], n))
			}
		}
		if len(bad) == 0 && len(cs) > 0 {
			return
		}
		last = strings.Join(bad, ", ")
		if time.Now().After(deadline) {
			s.t.Fatalf("not healthy after %s: %s", timeout, last)
		}
		time.Sleep(2 * time.Second)
	}
}

// metrics fetches a container's /metrics from inside it (the images have
// bash, not curl) and returns the sum of each metric over its labels, and
// the value of each labelled series.
func (s *stack) metrics(ctx context.Context, c container, port int) map[string]float64 {
	s.t.Helper()
	// Capture's /metrics is on its capture-network address only: try each
	// of the container's addresses.
	auth := ""
	if tok := s.env["METRICS_TOKEN"]; tok != "" {
		auth = `Authorization: Bearer ` + tok + `\r\n`
	}
	script := fmt.Sprintf(`for a in $(hostname -I); do (exec 3<>/dev/tcp/$a/%d && printf 'GET /metrics HTTP/1.0\r\n%s\r\n' >&3 && cat <&3) 2>/dev/null && exit 0; done; exit 1`, port, auth)
	var out string
	var err error
	for i := 0; i < 5; i++ {
		if out, err = s.try(ctx, "docker", "exec", c.ID, "bash", "-c", script); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		s.t.Fatalf("metrics of %s: %v", c.Name, err)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, "connpipe_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		m[series] = v
		if j := strings.IndexByte(series, '{'); j >= 0 {
			m[series[:j]] += v
		}
	}
	return m
}

// connectRedis (re)connects to both Redis instances through their loopback
// ports, as connpipe-admin; a restarted container gets a new port.
func (s *stack) connectRedis(ctx context.Context) {
	s.t.Helper()
	for _, name := range []string{"redis-a", "redis-b"} {
		addr := strings.TrimSpace(s.dc(ctx, "port", name, "6379"))
		if addr == "" {
			s.t.Fatalf("%s publishes no port", name)
		}
		if old := s.rdbs[name]; old != nil {
			old.Close()
		}
		// admin's read-only login: the stack serves no anonymous client.
		s.rdbs[name] = redis.NewClient(&redis.Options{Addr: addr, Username: "connpipe-admin", Password: s.env["REDIS_ADMIN_PASSWORD"],
			MaxRetries: 3, DialTimeout: 2 * time.Second})
	}
}

// count counts the records stored in the buckets of seconds from..to in
// each named Redis instance (both when none is named).
func (s *stack) count(ctx context.Context, from, to int64, names ...string) map[string]int {
	s.t.Helper()
	if len(names) == 0 {
		names = []string{"redis-a", "redis-b"}
	}
	out := map[string]int{}
	for _, name := range names {
		n := 0
		s.read(ctx, name, from, to, func(*record.Record) { n++ })
		out[name] = n
	}
	return out
}

// read reads the records stored in the buckets of seconds from..to in the
// named Redis instance, retrying a failed read from the start.
func (s *stack) read(ctx context.Context, name string, from, to int64, fn func(*record.Record)) {
	s.t.Helper()
	layout := store.Layout{Prefix: s.env["REDIS_PREFIX"]}
	var got []record.Record // copies: the decoder may reuse its record
	var err error
	for i := 0; i < 10; i++ {
		got = got[:0]
		err = layout.Read(ctx, s.rdbs[name], from, to, store.Filter{}, func(r *record.Record) { got = append(got, *r) })
		if err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		s.t.Fatalf("read %s: %v", name, err)
	}
	for i := range got {
		fn(&got[i])
	}
}

// checkSplit checks that records in buckets from..to split as wantA percent
// to redis-a, within tol percentage points.
func (s *stack) checkSplit(counts map[string]int, wantA, tol float64, minRecords int) {
	s.t.Helper()
	a, b := counts["redis-a"], counts["redis-b"]
	total := a + b
	if total < minRecords {
		s.t.Fatalf("only %d records stored (redis-a %d, redis-b %d), want at least %d", total, a, b, minRecords)
	}
	share := 100 * float64(a) / float64(total)
	s.logf("redis-a %d, redis-b %d: %.2f%% / %.2f%% (want %.0f/%.0f ±%.0f points)", a, b, share, 100-share, wantA, 100-wantA, tol)
	if share < wantA-tol || share > wantA+tol {
		s.t.Fatalf("redis-a holds %.2f%% of %d records, want %.0f%% ±%.0f points", share, total, wantA, tol)
	}
}

// status is the part of admin's GET /api/v1/status the test reads.
type status struct {
	Connected bool   `json:"connected"` // admin's control log session is up
	Session   string `json:"session"`
	Weights   string `json:"weights"`
	Converged bool   `json:"converged"`
	Table     struct {
		Version int `json:"version"`
	} `json:"table"`
	Consumers []struct {
		ID        string `json:"id"`
		Host      string `json:"host"`
		Alive     bool   `json:"alive"`
		Weights   string `json:"weights"`
		Version   int    `json:"version"`
		Converged bool   `json:"converged"`
		Acked     int64  `json:"acked"`
	} `json:"consumers"`
	// Each capture admin scrapes: its host as configured and the address.
	Captures []struct {
		Name      string  `json:"name"`
		Addr      string  `json:"addr"`
		Packets   float64 `json:"packets"`
		Confirmed float64 `json:"records_confirmed"`
		Error     string  `json:"error"`
	} `json:"captures"`
}

func (s *stack) status(ctx context.Context) (status, error) {
	var st status
	err := s.getJSON(ctx, "http://127.0.0.1:"+s.env["ADMIN_PORT"]+"/api/v1/status", s.env["ADMIN_TOKEN"], &st)
	return st, err
}

// waitWeights waits until admin reports the table want ("redis-a=50
// redis-b=50") and every live consumer has applied it.
func (s *stack) waitWeights(ctx context.Context, want string, timeout time.Duration) status {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.status(ctx)
		if err == nil && st.Weights == want && st.Converged {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("admin does not report %q converged after %s: weights %q converged %v err %v", want, timeout, st.Weights, st.Converged, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// getJSON GETs u from admin's API with its token and decodes the answer.
func (s *stack) getJSON(ctx context.Context, u, token string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, tail(string(body), 3))
	}
	return json.Unmarshal(body, v)
}

// queue is one queue as rabbitmqctl list_queues reports it. (Not from the
// management API: its per-queue endpoint upsets RabbitMQ 3.10's statistics
// under load.)
type queue struct {
	Name      string
	Type      string
	Messages  int
	Consumers int
	Leader    string   // quorum queues and streams: the node leading it
	Members   []string // the nodes holding a replica
	Online    []string // the members that run
}

// queues lists the default virtual host's queues with rabbitmqctl inside
// the first of the stack's broker nodes that answers.
func (s *stack) queues(ctx context.Context) (map[string]queue, error) {
	var errs []string
	for _, node := range s.brokerNodes() {
		name, args := s.composeArgs("exec", "-T", node, "rabbitmqctl", "list_queues", "-q", "--formatter", "json",
			"name", "type", "messages", "consumers", "leader", "members", "online")
		out, err := s.try(ctx, name, args...)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", node, err))
			continue
		}
		return parseQueues(out)
	}
	return nil, fmt.Errorf("rabbitmqctl list_queues: %s", strings.Join(errs, "; "))
}

// brokerNodes are the stack's RabbitMQ services: rabbitmq, and in a
// cluster rabbitmq-2 and rabbitmq-3.
func (s *stack) brokerNodes() []string {
	nodes := []string{"rabbitmq"}
	for _, f := range s.files {
		if strings.HasSuffix(f, "cluster.yml") {
			nodes = append(nodes, "rabbitmq-2", "rabbitmq-3")
		}
	}
	return nodes
}

// parseQueues reads list_queues' JSON; a value RabbitMQ has no number or
// list for (a stream's message count, a classic queue's members) is empty.
func parseQueues(out string) (map[string]queue, error) {
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("list_queues: %v: %s", err, tail(out, 5))
	}
	str := func(v any) string { s, _ := v.(string); return s }
	num := func(v any) int { f, _ := v.(float64); return int(f) }
	list := func(v any) []string {
		var l []string
		if vs, ok := v.([]any); ok {
			for _, x := range vs {
				l = append(l, str(x))
			}
		}
		sort.Strings(l)
		return l
	}
	qs := map[string]queue{}
	for _, r := range rows {
		q := queue{Name: str(r["name"]), Type: str(r["type"]), Messages: num(r["messages"]), Consumers: num(r["consumers"]),
			Leader: str(r["leader"]), Members: list(r["members"]), Online: list(r["online"])}
		qs[q.Name] = q
	}
	return qs, nil
}

func (s *stack) recordsQueue(ctx context.Context) (queue, error) {
	qs, err := s.queues(ctx)
	if err != nil {
		return queue{}, err
	}
	q, ok := qs["conn.records"]
	if !ok {
		return q, errors.New("no queue conn.records")
	}
	return q, nil
}

// queueDepth is the number of messages in a queue of the default vhost.
func (s *stack) queueDepth(ctx context.Context, name string) (int, error) {
	qs, err := s.queues(ctx)
	if err != nil {
		return 0, err
	}
	q, ok := qs[name]
	if !ok {
		return 0, fmt.Errorf("no queue %s", name)
	}
	return q.Messages, nil
}

// eventually polls cond until it returns nil or timeout passes.
func (s *stack) eventually(timeout time.Duration, what string, cond func() error) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

// dump prints the state of the stack after a failure.
func (s *stack) dump(ctx context.Context) {
	fmt.Println("\n=== stack state after the failure")
	if out, err := s.tryDC(ctx, "ps"); err == nil {
		fmt.Println(out)
	}
	if out, err := s.tryDC(ctx, "logs", "--no-color", "--tail=30"); err == nil {
		fmt.Println(out)
	}
}

// checkRedisLogins: a client without a login gets NOAUTH, and admin's
// read-only user may read but not write.
func (s *stack) checkRedisLogins(ctx context.Context) {
	s.t.Helper()
	for name, rdb := range s.rdbs {
		anon := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, MaxRetries: -1, DialTimeout: 2 * time.Second})
		err := anon.Ping(ctx).Err()
		anon.Close()
		if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			s.t.Errorf("%s: PING without a login: %v, want NOAUTH", name, err)
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			s.t.Errorf("%s: PING as connpipe-admin: %v", name, err)
		}
		err = rdb.Set(ctx, s.env["REDIS_PREFIX"]+"e2e-write", "1", time.Second).Err()
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			s.t.Errorf("%s: SET as connpipe-admin: %v, want NOPERM", name, err)
		}
		s.logf("%s: anonymous PING refused, connpipe-admin reads but may not write", name)
	}
}

// checkNetworks: capture reaches the broker but no Redis; the generator
// reaches capture's port but not the broker, nor capture's /metrics, which
// admin reaches.
func (s *stack) checkNetworks(ctx context.Context) {
	s.t.Helper()
	reach := func(service, host, port string, want bool) {
		_, err := s.tryDC(ctx, "exec", "-T", service, "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port)
		if (err == nil) != want {
			s.t.Errorf("%s → %s:%s: connected %v, want %v", service, host, port, err == nil, want)
		}
		s.logf("%-10s → %-9s %-5s %s", service, host, port, map[bool]string{true: "reached", false: "unreachable"}[err == nil])
	}
	reach("capture", "rabbitmq", "5672", true)
	reach("capture", "redis-a", "6379", false)
	reach("trafficgen", "capture", "7000", true)
	reach("trafficgen", "rabbitmq", "5672", false)
	reach("trafficgen", "redis-b", "6379", false)
	// Capture's /metrics: from admin's side (the broker's network), not
	// from the traffic network.
	reach("admin", "capture", "9100", true)
	reach("trafficgen", "capture", "9100", false)

}

// freePorts are n loopback ports no one listens on now, from the kernel's
// ephemeral range.
func freePorts(t *testing.T, n int) []string {
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // held until all are chosen, so they differ
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return ports
}
