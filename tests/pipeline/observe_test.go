package pipeline

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.yaml.in/yaml/v3"
)

// The Prometheus rules, their unit tests and the dashboard in
// deployments/observability, checked against promtool, docs/operations.md
// and the metrics the services really export.

const obsDir = "../../deployments/observability"

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTests is the part of a promtool test file the tests read.
type ruleTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(obsDir, "rules", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files in %s/rules (%v)", obsDir, err)
	}
	return files
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var all ruleFile
	for _, f := range ruleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Groups = append(all.Groups, parseRules(t, b).Groups...)
	}
	return all
}

func parseRules(t *testing.T, b []byte) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("rules: %v", err)
	}
	return rf
}

// promtool finds Debian's promtool (scripts/testenv.sh installs it); a
// machine without it skips, naming it, except under CI, where it fails.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool not installed (%v); scripts/testenv.sh up installs Debian's prometheus", err)
		}
		t.Skip("promtool not installed (scripts/testenv.sh up installs Debian's prometheus)")
	}
	return p
}

func TestAlertRulesPassPromtoolCheck(t *testing.T) {
	bin := promtool(t)
	out, err := exec.Command(bin, append([]string{"check", "rules"}, ruleFiles(t)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// Every alert has a unit test in which it fires and one in which it stays
// silent, and promtool runs them all.
func TestAlertRulesUnitTests(t *testing.T) {
	bin := promtool(t)
	files, err := filepath.Glob(filepath.Join(obsDir, "tests", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests in %s/tests (%v)", obsDir, err)
	}
	cmd := exec.Command(bin, append([]string{"test", "rules"}, filepath.Base(files[0]))...)
	for _, f := range files[1:] {
		cmd.Args = append(cmd.Args, filepath.Base(f))
	}
	cmd.Dir = filepath.Join(obsDir, "tests")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	fires, silent := map[string]int{}, map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rt ruleTests
		if err := yaml.Unmarshal(b, &rt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range rt.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname]++
				} else {
					silent[a.Alertname]++
				}
			}
		}
	}
	alerts := alertNames(loadRules(t))
	if len(alerts) < 20 {
		t.Fatalf("only %d alerts read from the rules: %v", len(alerts), alerts)
	}
	for _, a := range alerts {
		if fires[a] == 0 || silent[a] == 0 {
			t.Errorf("alert %s: %d firing and %d silent cases, want at least one of each", a, fires[a], silent[a])
		}
		delete(fires, a)
		delete(silent, a)
	}
	for a := range fires {
		t.Errorf("a test expects alert %s, which no rule defines", a)
	}
	t.Logf("%d alerts, each with a firing and a silent case", len(alerts))
}

func alertNames(rf ruleFile) []string {
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	return names
}

// Every alert has a summary, a description and a runbook link that
// resolves to a heading of docs/operations.md.
func TestRunbookLinksResolveToHeadings(t *testing.T) {
	const doc = "docs/operations.md"
	b, err := os.ReadFile(filepath.Join("../..", doc))
	if err != nil {
		t.Fatal(err)
	}
	anchors := headingAnchors(string(b))
	n := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			for _, k := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, k)
				}
			}
			file, anchor, ok := strings.Cut(r.Annotations["runbook"], "#")
			switch {
			case !ok || file != doc:
				t.Errorf("alert %s: runbook %q does not link into %s", r.Alert, r.Annotations["runbook"], doc)
			case !anchors[anchor]:
				t.Errorf("alert %s: runbook anchor #%s is no heading of %s", r.Alert, anchor, doc)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert read")
	}
}

// headingAnchors are the anchors a Markdown renderer gives the headings:
// lower case, punctuation dropped, spaces as hyphens.
func headingAnchors(md string) map[string]bool {
	out := map[string]bool{}
	fence := false
	for line := range strings.Lines(md) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var sb strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				sb.WriteRune('-')
			case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
				sb.WriteRune(r)
			}
		}
		out[sb.String()] = true
	}
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "atan2": true}
)

// metricNames lists the metric names a PromQL expression selects: label
// matchers, ranges, grouping labels, functions and keywords left out.
func metricNames(expr string) []string {
	e := promString.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRange.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		if promKeywords[strings.ToLower(name)] || strings.HasPrefix(rest, "(") {
			continue
		}
		if loc[0] > 0 && (e[loc[0]-1] == '.' || ('0' <= e[loc[0]-1] && e[loc[0]-1] <= '9')) {
			continue // a number's exponent or a duration's unit
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestMetricNamesOfExpressions(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (job, instance) (rate(connpipe_capture_kernel_drops_total{worker!="0"}[5m])) > 0`:          {"connpipe_capture_kernel_drops_total"},
		`a:b:rate5m / ignoring(backend) group_left() sum(x_total) unless on() (min(up{job="a b"}) == 0)`:   {"a:b:rate5m", "x_total", "up"},
		`histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) > 1e3 and delta(q[10m] offset 5m) > 0`: {"h_bucket", "q"},
		`count(ALERTS{alertstate="firing",alertname=~"Connpipe.*"}) or vector(0)`:                          {"ALERTS"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %v, want %v", expr, got, want)
		}
	}
}

// prometheusOwn are series Prometheus itself makes, not any exporter.
var prometheusOwn = map[string]bool{"up": true, "ALERTS": true, "ALERTS_FOR_STATE": true}

// usedNames is every metric name the rules and the dashboard query, each
// with where it is used; recorded is every recording rule's name.
func usedNames(rf ruleFile, dashboard []byte) (used map[string]string, recorded map[string]bool, err error) {
	used, recorded = map[string]string{}, map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			for _, n := range metricNames(r.Expr) {
				used[n] = "rule " + r.Record + r.Alert
			}
		}
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, nil, fmt.Errorf("dashboard: %w", err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, n := range metricNames(tg.Expr) {
				used[n] = "dashboard panel " + p.Title
			}
		}
	}
	return used, recorded, nil
}

// unexported lists the names used that are neither recorded, Prometheus's
// own, nor a series name some scrape returned.
func unexported(used map[string]string, recorded, exported map[string]bool) []string {
	var out []string
	for n, where := range used {
		if !recorded[n] && !prometheusOwn[n] && !exported[n] {
			out = append(out, fmt.Sprintf("%s (%s)", n, where))
		}
	}
	slices.Sort(out)
	return out
}

// scrapeNames adds the series names of addr's /metrics to into: a
// histogram shows as its _bucket, _sum and _count series, as PromQL sees it.
func scrapeNames(addr string, into map[string]bool) error {
	m, err := metrics(addr)
	if err != nil {
		return err
	}
	for series := range m {
		name, _, _ := strings.Cut(series, "{")
		into[name] = true
	}
	return nil
}

// observePorts: a private RabbitMQ node with the rabbitmq_prometheus
// plugin (AMQP, and the plugin's listener).
const (
	observeAMQPPort    = 5792
	observePluginsPort = 15792
)

// Every metric name the rules and the dashboard use is exported by the
// running services (capture live on lo with a spool, a consumer, admin)
// or by RabbitMQ's rabbitmq_prometheus plugin, so renaming a metric fails
// here rather than silencing an alert.
func TestObservedMetricNamesAreExported(t *testing.T) {
	rf := loadRules(t)
	dash, err := os.ReadFile(filepath.Join(obsDir, "grafana", "connpipe.json"))
	if err != nil {
		t.Fatal(err)
	}
	used, recorded, err := usedNames(rf, dash)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedNames(t)

	if missing := unexported(used, recorded, exported); len(missing) > 0 {
		t.Errorf("%d metric names used but exported by no service:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
	t.Logf("%d metric names used, %d series names exported", len(used), len(exported))

	// The check catches a rule naming a metric nobody exports.
	b, err := os.ReadFile(ruleFiles(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	const good, broken = "connpipe_capture_spool_records", "connpipe_capture_spool_recrods"
	if !strings.Contains(string(b), good) {
		t.Fatalf("the rules no longer use %s; pick another name to break", good)
	}
	usedBroken, _, err := usedNames(parseRules(t, []byte(strings.ReplaceAll(string(b), good, broken))), dash)
	if err != nil {
		t.Fatal(err)
	}
	missing := unexported(usedBroken, recorded, exported)
	if len(missing) != 1 || !strings.HasPrefix(missing[0], broken+" ") {
		t.Errorf("with %s renamed %s in the rules, the check reports %v; want exactly the broken name", good, broken, missing)
	}
}

// exportedNames runs the services and a RabbitMQ node with its Prometheus
// plugin, drives every metric the rules use into existence, and returns
// the series names their /metrics pages show.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	rmq := testenv.StartRabbit(t, testenv.RabbitOptions{
		Name: "connpipe-observe", Port: observeAMQPPort,
		Conf:  fmt.Sprintf("prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = %d\nprometheus.return_per_object_metrics = true\n", observePluginsPort),
		Files: map[string][]byte{"enabled_plugins": []byte("[rabbitmq_prometheus].\n")},
	})
	// Per-queue series exist once a queue does.
	rch := testenv.Channel(t, rmq.URL())
	if _, err := rch.QueueDeclare(topology.RecordsQueue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare %s on the private node: %v", topology.RecordsQueue, err)
	}

	s := newSystem(t, nil)
	adminMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "admin", "admin", s.with(map[string]string{
		"HTTP_ADDR": s.adminAddr, "METRICS_ADDR": adminMetrics, "ADMIN_TOKEN": token, "CONSUMER_TIMEOUT": "2s",
	}), "serve")
	waitFor(t, 20*time.Second, "admin healthy", func() (bool, string) { return healthy(s.adminAddr), "healthz not ok" })
	c := s.startConsumer("consumer-1")
	spool := t.TempDir()
	s.capAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.capture = start(t, "capture", "capture", s.with(map[string]string{
		"INTERFACE": "lo", "LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", s.port), "SINK": "true",
		"METRICS_ADDR": s.capAddr, "SPOOL_DIR": spool,
	}))
	waitFor(t, 20*time.Second, "capture healthy", func() (bool, string) { return healthy(s.capAddr), "healthz not ok" })

	// Records through to Redis, and one message the consumer dead-letters.
	traffic(t, s.port, 1, 5, 2)
	ch := testenv.Channel(t, s.amqp)
	testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{ContentType: record.ContentTypeBinary, Body: []byte("CPRB broken")})
	waitFor(t, 30*time.Second, "records stored and a message dead-lettered", func() (bool, string) {
		m, err := metrics(c.addr)
		if err != nil {
			return false, err.Error()
		}
		var stored, dead float64
		for k, v := range m {
			if strings.HasPrefix(k, "connpipe_consumer_records_stored_total") {
				stored += v
			}
			if strings.HasPrefix(k, "connpipe_consumer_messages_dead_lettered_total") {
				dead += v
			}
		}
		return stored > 0 && dead > 0, fmt.Sprintf("stored %v, dead-lettered %v", stored, dead)
	})

	exported := map[string]bool{}
	for _, addr := range []string{s.capAddr, c.addr, adminMetrics} {
		if err := scrapeNames(addr, exported); err != nil {
			t.Fatalf("scrape %s: %v", addr, err)
		}
	}
	plugin := fmt.Sprintf("127.0.0.1:%d", observePluginsPort)
	waitFor(t, 30*time.Second, "rabbitmq_prometheus answers with per-queue series", func() (bool, string) {
		if err := scrapeNames(plugin, exported); err != nil {
			return false, err.Error()
		}
		return exported["rabbitmq_queue_messages_ready"], "no rabbitmq_queue_messages_ready"
	})
	return exported
}
