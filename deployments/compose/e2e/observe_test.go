//go:build e2e && observe

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// alertDeadline is how soon after its cause an alert must fire.
const alertDeadline = 2 * time.Minute

// TestComposeObserve runs the stack with Prometheus and Alertmanager
// (make up OBSERVE=1), checks that Prometheus scrapes every service (two
// consumers found by DNS) and reaches nothing else, stops RabbitMQ until
// the broker and spooling alerts fire and starts it until they resolve,
// puts a Redis backend at maxmemory until the out-of-rotation alert fires,
// all read from Prometheus's HTTP API, and sees the alerts on admin's API.
func TestComposeObserve(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "connpipe-observe", "deployments/observability/compose.yml")
	stage := s.timedStage
	t.Setenv("OBSERVE", "1") // images.sh builds Prometheus and Alertmanager too
	ports := freePorts(t, 5)
	s.prepare(ctx, "AMQP_PORT="+ports[0], "RABBITMQ_MGMT_PORT="+ports[1], "ADMIN_PORT="+ports[2],
		"PROMETHEUS_PORT="+ports[3], "ALERTMANAGER_PORT="+ports[4])
	prom := "http://127.0.0.1:" + ports[3]
	admin := "http://127.0.0.1:" + ports[2]

	want := map[string]int{"redis-a": 1, "redis-b": 1, "rabbitmq": 1, "capture": 1, "consumer": 2, "admin": 1,
		"trafficgen": 3, "prometheus": 1, "alertmanager": 1}
	stage("up OBSERVE=1: every service healthy", func() {
		s.dc(ctx, "up", "-d", "--scale", "consumer=2")
		s.waitHealthy(ctx, 5*time.Minute, want)
	})

	stage("Prometheus scrapes every target; reaches nothing else", func() {
		wantUp := map[string]int{"connpipe-capture": 1, "connpipe-consumer": 2, "connpipe-admin": 1, "rabbitmq": 1}
		s.eventually(2*time.Minute, "every target up", func() error { return s.targetsUp(ctx, prom, wantUp) })
		reach := func(host, port string, want bool) {
			_, err := s.tryDC(ctx, "exec", "-T", "prometheus", "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port)
			if (err == nil) != want {
				t.Errorf("prometheus → %s:%s: connected %v, want %v", host, port, err == nil, want)
			}
			s.logf("prometheus → %-9s %-5s %s", host, port, map[bool]string{true: "reached", false: "unreachable"}[err == nil])
		}
		reach("rabbitmq", "15692", true)
		reach("capture", "9100", true)
		reach("redis-a", "6379", false)
		reach("redis-b", "6379", false)
		// Nothing fires on the healthy stack, once the rules have seen
		// every target scraped (capture starts last, and "capture down"
		// fires while it has no target).
		s.eventually(time.Minute, "no alert firing on the healthy stack", func() error {
			if firing := s.firing(ctx, prom); len(firing) > 0 {
				return fmt.Errorf("firing: %v", firing)
			}
			return nil
		})
	})

	broker := []string{"ConnpipeBrokerDown", "ConnpipeCaptureSpooling"}
	stage("stop rabbitmq: broker and spooling alerts fire", func() {
		s.dc(ctx, "stop", "rabbitmq")
		stopped := time.Now()
		fired := s.waitAlerts(ctx, prom, broker, true, alertDeadline)
		for _, a := range broker {
			s.logf("%s firing %s after docker compose stop rabbitmq (limit %s)", a, fired[a], alertDeadline)
		}
		var rep struct {
			Configured bool   `json:"configured"`
			Link       string `json:"link"`
			Firing     []struct {
				Name string `json:"name"`
			} `json:"firing"`
		}
		s.eventually(30*time.Second, "admin lists the broker alert", func() error {
			if err := s.getJSON(ctx, admin+"/api/v1/alerts", s.env["ADMIN_TOKEN"], &rep); err != nil {
				return err
			}
			for _, a := range rep.Firing {
				if a.Name == "ConnpipeBrokerDown" {
					return nil
				}
			}
			return fmt.Errorf("admin's alerts: %+v", rep)
		})
		if !rep.Configured || rep.Link != prom {
			t.Errorf("admin's alerts: configured %v, link %q; want the link %s", rep.Configured, rep.Link, prom)
		}
		s.logf("admin lists ConnpipeBrokerDown %s after the stop, links to %s", since(stopped), rep.Link)
	})

	stage("start rabbitmq: they resolve", func() {
		s.dc(ctx, "start", "rabbitmq")
		resolved := s.waitAlerts(ctx, prom, broker, false, 4*time.Minute)
		for _, a := range broker {
			s.logf("%s resolved %s after docker compose start rabbitmq", a, resolved[a])
		}
	})

	stage("redis-b at maxmemory: out-of-rotation alert fires", func() {
		overlay := filepath.Join(t.TempDir(), "maxmemory.yml")
		if err := os.WriteFile(overlay, []byte("services:\n  redis-b:\n    environment:\n      REDIS_MAXMEMORY: 100kb\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(s.root, overlay) // compose files are named from the root
		if err != nil {
			t.Fatal(err)
		}
		full := *s
		full.files = append(slices.Clone(s.files), rel)
		full.dc(ctx, "up", "-d", "--no-deps", "redis-b")
		full.waitHealthy(ctx, 2*time.Minute, want)
		fired := s.waitAlerts(ctx, prom, []string{"ConnpipeBackendOutOfRotation"}, true, alertDeadline)
		s.logf("ConnpipeBackendOutOfRotation firing %s after redis-b restarted at maxmemory 100kb", fired["ConnpipeBackendOutOfRotation"])
		labels := s.alertLabels(ctx, prom, "ConnpipeBackendOutOfRotation")
		if labels["backend"] != "redis-b" || labels["state"] != "oom" {
			t.Errorf("ConnpipeBackendOutOfRotation labels %v, want backend redis-b, state oom", labels)
		}
		s.dc(ctx, "up", "-d", "--no-deps", "redis-b")
		s.waitHealthy(ctx, 2*time.Minute, want)
	})

	stage("down -v leaves nothing", func() { s.downLeavesNothing(ctx) })
}

// promAlert is one alert of Prometheus's /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (s *stack) promAlerts(ctx context.Context, prom string) ([]promAlert, error) {
	var ans struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	err := s.getJSON(ctx, prom+"/api/v1/alerts", "", &ans)
	return ans.Data.Alerts, err
}

// firing lists the names of the alerts firing.
func (s *stack) firing(ctx context.Context, prom string) []string {
	s.t.Helper()
	alerts, err := s.promAlerts(ctx, prom)
	if err != nil {
		s.t.Fatal(err)
	}
	var names []string
	for _, a := range alerts {
		if a.State == "firing" && !slices.Contains(names, a.Labels["alertname"]) {
			names = append(names, a.Labels["alertname"])
		}
	}
	slices.Sort(names)
	return names
}

// alertLabels are the labels of the first firing alert named name.
func (s *stack) alertLabels(ctx context.Context, prom, name string) map[string]string {
	s.t.Helper()
	alerts, err := s.promAlerts(ctx, prom)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, a := range alerts {
		if a.State == "firing" && a.Labels["alertname"] == name {
			return a.Labels
		}
	}
	return nil
}

// waitAlerts polls Prometheus every second until each named alert is
// firing (or, with fire false, no longer firing), and returns when each
// got there, counted from the call.
func (s *stack) waitAlerts(ctx context.Context, prom string, names []string, fire bool, timeout time.Duration) map[string]time.Duration {
	s.t.Helper()
	start := time.Now()
	at := map[string]time.Duration{}
	what := map[bool]string{true: "firing", false: "resolved"}[fire]
	s.eventually(timeout, strings.Join(names, ", ")+" "+what, func() error {
		firing := s.firing(ctx, prom)
		var waiting []string
		for _, n := range names {
			if _, done := at[n]; done {
				continue
			}
			if slices.Contains(firing, n) == fire {
				at[n] = since(start)
				continue
			}
			waiting = append(waiting, n)
		}
		if len(waiting) > 0 {
			return fmt.Errorf("not yet %s: %v (firing: %v)", what, waiting, firing)
		}
		return nil
	})
	return at
}

// targetsUp checks that Prometheus scrapes want[job] targets of each job,
// every one up.
func (s *stack) targetsUp(ctx context.Context, prom string, want map[string]int) error {
	var ans struct {
		Data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := s.getJSON(ctx, prom+"/api/v1/targets?state=active", "", &ans); err != nil {
		return err
	}
	up := map[string]int{}
	var bad []string
	for _, tg := range ans.Data.ActiveTargets {
		job := tg.Labels["job"]
		if tg.Health == "up" {
			up[job]++
		} else if _, ok := want[job]; ok {
			bad = append(bad, fmt.Sprintf("%s %s: %s %s", job, tg.Labels["instance"], tg.Health, tg.LastError))
		}
	}
	for job, n := range want {
		if up[job] != n {
			bad = append(bad, fmt.Sprintf("%s: %d targets up, want %d", job, up[job], n))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	for job, n := range up {
		s.logf("job %-18s %d target(s) up", job, n)
	}
	return nil
}
