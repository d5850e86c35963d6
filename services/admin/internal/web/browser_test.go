package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// TestOperatorPage drives the page in headless Chromium against a running
// system: admin (in this process), two real consumer processes and a real
// capture on the loopback interface, real RabbitMQ and Redis. Records are
// published to conn.records at 1000/s, plus a trickle of TCP connections
// to the capture's sink so its counters move.
//
// It checks that the page loads without console errors and lists both
// instances and both consumers; that its observed shares match the counts
// read from Redis over the same window; that a wrong token, a stale
// version and a bad weight are refused in words and change nothing; and
// that 30/70 → 50/50 through the form changes the API's weights, with the
// chart and shares following within 10 s. It saves a screenshot
// (CONNPIPE_SCREENSHOT, default in the temporary directory) and fails if
// it is blank.
//
// Without Chromium the test is skipped, except under CI=true, where it
// fails: install it with `apt-get install chromium` (scripts/testenv.sh
// does, with CONNPIPE_BROWSER=1).
func TestOperatorPage(t *testing.T) {
	chromium := chromiumPath(t)
	began := time.Now()
	defer func() { t.Logf("browser test took %s", time.Since(began).Round(100*time.Millisecond)) }()
	bins := build(t, "consumer", "capture")

	sinkPort, capMetrics := freePort(t), freePort(t)
	e := apptest.Start(t, func(c *app.Config) {
		c.ConsumerTimeout = 3 * time.Second
		c.CaptureMetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", capMetrics)
		c.BackendAllow = "127.0.0.1:*" // redis-c, added below
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cleanBuckets(t, e, time.Now())

	base := map[string]string{"AMQP_URL": e.Config.AMQPURL, "LOG_FORMAT": "text", "LOG_LEVEL": "warn"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	start(t, "capture", bins["capture"], with(map[string]string{
		"INTERFACE": "lo", "LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", sinkPort), "SINK": "true",
		"METRICS_ADDR": fmt.Sprintf("127.0.0.1:%d", capMetrics),
	}))
	consumers := []string{"page-c1-" + testenv.ID(), "page-c2-" + testenv.ID()}
	for _, id := range consumers {
		start(t, id, bins["consumer"], with(map[string]string{
			"BACKENDS": e.Config.Backends, "WEIGHTS": e.Config.Weights, "REDIS_PREFIX": e.Config.RedisPrefix,
			"RETENTION": e.Config.Retention.String(), "CONSUMER_ID": id, "HEARTBEAT_INTERVAL": "1s",
			"METRICS_ADDR": fmt.Sprintf("127.0.0.1:%d", freePort(t)), "BACKEND_ALLOW": "127.0.0.1:*",
		}))
	}
	feedCtx, stopFeed := context.WithCancel(ctx)
	var feeders sync.WaitGroup
	defer func() { stopFeed(); feeders.Wait() }()
	feeders.Go(func() { publishRecords(t, feedCtx, e.Config.AMQPURL) })
	feeders.Go(func() { connect(feedCtx, sinkPort) })

	// The system runs: both consumers alive and storing, capture scraped.
	waitStatus(t, e, 30*time.Second, "both consumers alive and records stored", func(st apitypes.Status) bool {
		alive := 0
		for _, c := range st.Consumers {
			if c.Alive && c.Ready && c.Records > 0 {
				alive++
			}
		}
		return alive == 2 && st.Capture != nil && st.Capture.Error == "" && st.Capture.Packets > 0
	})

	b := newBrowser(t, ctx, chromium)
	if err := chromedp.Do(b.ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(e.URL+"/")); err != nil {
		t.Fatalf("open the page: %v", err)
	}

	// 0. Without the read token the page shows nothing but asks for it.
	b.waitPage(t, 10*time.Second, "asks for the read token", func(p page) bool {
		return p.Polls == 0 && len(p.Instances) == 0 && strings.Contains(p.Banner, "read token")
	})
	b.typeInto(t, "read-token", e.ReadToken)
	b.forgetRefusedReads(t)

	// 1. The page lists both instances and every consumer, and its
	// observed shares match Redis over the window it states.
	p := b.waitPage(t, 20*time.Second, "both instances, both consumers, 5 s of records", func(p page) bool {
		return len(p.Instances) == 2 && len(p.Chart) == 2 && p.hasConsumers(consumers) && p.Capture["packets"] != "" &&
			p.total() >= 5000
	})
	for _, in := range p.Instances {
		if in.State != "up" {
			t.Errorf("instance %s: state %q, want up", in.Name, in.State)
		}
	}
	before := b.checkShares(t, e, p)
	if a := before["redis-a"]; math.Abs(a-30) > 2 {
		t.Errorf("observed share of redis-a at 30/70: %.1f %%", a)
	}
	if strings.HasPrefix(p.Capture["packets"], "0") || p.Broker["ready"] == "" || p.Broker["dead"] == "" {
		t.Errorf("capture panel %v, broker panel %v", p.Capture, p.Broker)
	}
	if len(p.Captures) != 1 || p.Captures[0].State != "answering" || p.Captures[0].Packets == "" || p.Captures[0].Packets == "0" {
		t.Errorf("captures list %+v, want the one capture answering with packets", p.Captures)
	}
	b.noConsoleErrors(t)

	// 3. Refusals: shown in words, nothing changes.
	b.setWeights(t, map[string]string{"redis-a": "50", "redis-b": "50"})
	b.typeInto(t, "token", "not-the-token")
	p = b.apply(t, "wrong token")
	if p.Result.Status != "403" || !strings.Contains(p.Result.Text, "wrong token") || p.Result.Class != "refused" {
		t.Errorf("wrong token: result %+v", p.Result)
	}
	expectWeights(t, e, 0, "redis-a=30 redis-b=70")

	// Someone else changes the table while the form holds version 0.
	other := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":30}}`,
		map[string]string{"Authorization": "Bearer " + e.Token, "If-Match": `"0"`})
	if other.Code != http.StatusOK {
		t.Fatalf("change by another writer: %d %s", other.Code, other.Body)
	}
	b.typeInto(t, "token", e.Token)
	// The operator sees the warning first: the page has polled the new
	// version and says the form's base is stale.
	b.waitPage(t, 15*time.Second, "the stale-form warning", func(p page) bool {
		return p.FormVer == "0" && strings.Contains(p.FormDrift, "moved on to version 1")
	})
	p = b.apply(t, "stale version")
	if p.Result.Status != "409" || !strings.Contains(p.Result.Text, "stale version") || p.Result.Class != "refused" {
		t.Errorf("stale version: result %+v", p.Result)
	}
	expectWeights(t, e, 1, "redis-a=30 redis-b=70")

	b.reload(t, "1")
	b.setWeights(t, map[string]string{"redis-a": "300"})
	p = b.apply(t, "bad weight")
	if p.Result.Status != "400" || !strings.Contains(p.Result.Text, "out of range") || p.Result.Class != "refused" {
		t.Errorf("bad weight: result %+v", p.Result)
	}
	expectWeights(t, e, 1, "redis-a=30 redis-b=70")

	// 2. 30/70 → 50/50 through the form.
	b.reload(t, "1")
	b.setWeights(t, map[string]string{"redis-a": "50", "redis-b": "50"})
	p = b.apply(t, "50/50")
	changed := time.Now()
	if p.Result.Status != "200" || p.Result.Class != "ok" || !strings.Contains(p.Result.Text, "version 2") {
		t.Fatalf("50/50: result %+v", p.Result)
	}
	expectWeights(t, e, 2, "redis-a=50 redis-b=50")
	p = b.waitPage(t, 10*time.Second, "chart and shares following 50/50", func(p page) bool {
		a, bb := p.chartRate("redis-a"), p.chartRate("redis-b")
		return p.Version == "2" && a > 0 && math.Abs(a/(a+bb)-0.5) < 0.05 && p.observed("redis-a") >= before["redis-a"]+2
	})
	t.Logf("chart and observed shares followed 50/50 in %s", time.Since(changed).Round(100*time.Millisecond))
	after := b.checkShares(t, e, p)
	t.Logf("observed share of redis-a: %.1f %% before, %.1f %% after", before["redis-a"], after["redis-a"])
	for _, in := range p.Instances {
		if in.Weight != "50" {
			t.Errorf("instance %s shows weight %s, want 50", in.Name, in.Weight)
		}
	}

	// A few more seconds of 50/50 so the picture shows the lines meeting.
	time.Sleep(4 * time.Second)
	b.lookup(t, e)
	b.screenshot(t)

	// The rest of the routing form: the mode, and a backend added and
	// removed at runtime.
	if err := chromedp.Do(b.ctx, chromedp.SetValue(chromedp.ID("mode"), "hash"), chromedp.SetValue(chromedp.ID("hash-key"), "dst")); err != nil {
		t.Fatalf("choose hash mode: %v", err)
	}
	p = b.applyWith(t, "apply-mode", "hash mode")
	if p.Result.Status != "200" || !strings.Contains(p.Result.Text, "hash by dst") {
		t.Errorf("hash mode: result %+v", p.Result)
	}
	third := testenv.Redis(t, 3)[2]
	cleanup(t, e, third, began)
	b.typeInto(t, "new-name", "redis-c")
	b.typeInto(t, "new-addr", third)
	b.typeInto(t, "new-weight", "10")
	p = b.applyWith(t, "add-backend", "add redis-c")
	if p.Result.Status != "200" || !strings.Contains(p.Result.Text, "redis-c=10") {
		t.Errorf("add redis-c: result %+v", p.Result)
	}
	b.waitPage(t, 10*time.Second, "redis-c listed", func(p page) bool { return len(p.Instances) == 3 })
	if err := chromedp.Do(b.ctx, chromedp.SetValue(chromedp.ID("remove-name"), "redis-c")); err != nil {
		t.Fatal(err)
	}
	p = b.applyWith(t, "remove-backend", "remove redis-c")
	if p.Result.Status != "200" || strings.Contains(p.Result.Text, "redis-c") {
		t.Errorf("remove redis-c: result %+v", p.Result)
	}
	b.waitPage(t, 10*time.Second, "redis-c gone", func(p page) bool { return len(p.Instances) == 2 })
	var tb control.Table
	e.Read(t, "/api/v1/weights").Decode(t, &tb)
	if tb.Version != 5 || tb.RoutingMode() != control.ModeHash || tb.Key() != control.KeyDst || len(tb.Backends) != 2 {
		t.Errorf("API table after mode, add, remove: %s", tb.Describe())
	}
	b.sentinelBackend(t)
	b.noConsoleErrors(t)
}

// sentinelBackend adds the test Sentinel group as a backend of weight 0
// (no record goes there) and checks that the page shows the primary the
// sentinels name and its replicas, then removes it.
func (b *browser) sentinelBackend(t *testing.T) {
	t.Helper()
	sentinels, master := testenv.Sentinels(t)
	b.typeInto(t, "new-name", "redis-ha")
	b.typeInto(t, "new-addr", "sentinel://"+strings.Join(sentinels, ",")+"/"+master)
	b.typeInto(t, "new-weight", "0")
	if p := b.applyWith(t, "add-backend", "add redis-ha"); p.Result.Status != "200" {
		t.Fatalf("add redis-ha: result %+v", p.Result)
	}
	// A failover of the group by another test may be under way: the
	// primary shows once the sentinels agree on one.
	p := b.waitPage(t, 40*time.Second, "redis-ha with its primary and replicas", func(p page) bool {
		for _, in := range p.Instances {
			if in.Name == "redis-ha" && strings.Contains(in.Notes, "primary 127.0.0.1:") && strings.Contains(in.Notes, "replicas: 127.0.0.1:") {
				return true
			}
		}
		return false
	})
	for _, in := range p.Instances {
		if in.Name == "redis-ha" && in.State != "draining" {
			t.Errorf("redis-ha at weight 0: state %q, want draining", in.State)
		}
	}
	if err := chromedp.Do(b.ctx, chromedp.SetValue(chromedp.ID("remove-name"), "redis-ha")); err != nil {
		t.Fatal(err)
	}
	if p := b.applyWith(t, "remove-backend", "remove redis-ha"); p.Result.Status != "200" {
		t.Errorf("remove redis-ha: result %+v", p.Result)
	}
}

// lookup types a source address into the lookup box and checks that the
// page shows its count as the API gives it, and its records, each from that
// source.
func (b *browser) lookup(t *testing.T, e *apptest.Env) {
	t.Helper()
	const src = "10.1.3.7" // published once every 25.6 s (publishRecords)
	apiCount := func() int64 {
		var c apitypes.CountResponse
		e.Read(t, "/api/v1/records?since=5m&count=true&src="+src).Decode(t, &c)
		return c.Total
	}
	low := apiCount()
	b.typeInto(t, "lookup-value", src)
	b.click(t, "lookup")
	p := b.waitPage(t, 10*time.Second, "lookup of "+src, func(p page) bool { return p.Lookup.Class != "" })
	high := apiCount()
	total, err := strconv.ParseInt(p.Lookup.Total, 10, 64)
	if err != nil || p.Lookup.Class != "accepted" || total < low || total > high || low == 0 {
		t.Fatalf("lookup of %s: %+v; the API counted %d before and %d after", src, p.Lookup, low, high)
	}
	if int64(len(p.Lookup.Rows)) != total {
		t.Fatalf("lookup of %s lists %d rows for a count of %d", src, len(p.Lookup.Rows), total)
	}
	for _, r := range p.Lookup.Rows {
		if !strings.Contains(r, "|"+src+":") {
			t.Fatalf("lookup of %s listed %q", src, r)
		}
	}
	t.Logf("lookup of %s: %s", src, p.Lookup.Text)
	b.typeInto(t, "lookup-value", "10.1.3")
	b.click(t, "lookup")
	b.waitPage(t, 10*time.Second, "bad address refused", func(p page) bool {
		return p.Lookup.Class == "refused" && strings.Contains(p.Lookup.Text, "not an IP address") && len(p.Lookup.Rows) == 0
	})
}

// ---- the page as the test reads it ----------------------------------------

type page struct {
	Polls     int    `json:"polls"`
	Banner    string `json:"banner"`
	Version   string `json:"version"`
	ShareFrom int64  `json:"shareFrom"`
	ShareTo   int64  `json:"shareTo"`
	FormVer   string `json:"formVersion"`
	FormDrift string `json:"formDrift"`
	FormLoads int    `json:"formLoads"`
	Instances []struct {
		Name, State, Weight, Observed, Rate, Records, Notes string
	} `json:"instances"`
	Chart []struct {
		Name   string  `json:"name"`
		Rate   float64 `json:"rate"`
		Points int     `json:"points"`
	} `json:"chart"`
	Consumers []struct {
		ID, Alive, Version string
	} `json:"consumers"`
	Capture  map[string]string `json:"capture"`
	Captures []struct {
		ID, Packets, State string
	} `json:"captures"`
	Broker map[string]string `json:"broker"`
	Result struct {
		Class, Status, Text string
	} `json:"result"`
	Lookup struct {
		Class, Total, Text string
		Rows               []string
	} `json:"lookup"`
}

const readPage = `(() => {
  const inst = document.querySelector("#instances");
  const text = (r, sel) => { const e = r.querySelector(sel); return e ? e.textContent : ""; };
  const kv = (sel) => Object.fromEntries([...document.querySelectorAll(sel + " tr")].map((r) => [r.dataset.key || "", r.cells[1] ? r.cells[1].textContent : ""]));
  const res = document.querySelector("#form-result");
  return {
    polls: +(document.body.dataset.polls || 0),
    banner: document.querySelector("#banner").textContent,
    version: document.body.dataset.version || "",
    shareFrom: +(inst.dataset.shareFrom || 0), shareTo: +(inst.dataset.shareTo || 0),
    formVersion: document.querySelector("#form-version").textContent,
    formDrift: document.querySelector("#form-drift").textContent,
    formLoads: +(document.querySelector("#weights-form").dataset.loads || 0),
    instances: [...inst.querySelectorAll("tr[data-backend]")].map((r) => ({
      Name: r.dataset.backend, State: text(r, ".state"), Weight: text(r, ".weight"),
      Observed: text(r, ".share-observed"), Rate: text(r, ".rate"), Records: text(r, ".records"),
      Notes: r.cells[r.cells.length - 1].textContent })),
    chart: [...document.querySelectorAll("#chart polyline")].map((l) => ({
      name: l.dataset.backend, rate: +l.dataset.rate, points: l.getAttribute("points").split(" ").length })),
    consumers: [...document.querySelectorAll("#consumers tr[data-consumer]")].map((r) => ({
      ID: r.dataset.consumer, Alive: r.cells[2].textContent, Version: text(r, ".version") })),
    capture: kv("#capture"), broker: kv("#broker"),
    captures: [...document.querySelectorAll("#captures tr[data-capture]")].map((r) => ({
      ID: r.dataset.capture, Packets: text(r, ".packets"), State: text(r, ".state") })),
    result: { Class: res.className, Status: res.dataset.status || "", Text: res.textContent },
    lookup: { Class: document.querySelector("#lookup-summary").className,
      Total: document.querySelector("#lookup-summary").dataset.total || "",
      Text: document.querySelector("#lookup-summary").textContent,
      Rows: [...document.querySelectorAll("#lookup-records tbody tr")].map((r) => [...r.cells].map((c) => c.textContent).join("|")) },
  };
})()`

func (p page) hasConsumers(ids []string) bool {
	for _, id := range ids {
		found := false
		for _, c := range p.Consumers {
			found = found || (c.ID == id && c.Alive == "alive")
		}
		if !found {
			return false
		}
	}
	return true
}

// observed is an instance's observed share as shown, in percent (-1 if none).
func (p page) observed(name string) float64 {
	for _, in := range p.Instances {
		if in.Name == name {
			if v, err := strconv.ParseFloat(strings.TrimSuffix(in.Observed, " %"), 64); err == nil {
				return v
			}
		}
	}
	return -1
}

func (p page) chartRate(name string) float64 {
	for _, c := range p.Chart {
		if c.Name == name {
			return c.Rate
		}
	}
	return 0
}

func (p page) total() int {
	n := 0
	for _, in := range p.Instances {
		v, _ := strconv.Atoi(strings.ReplaceAll(in.Records, ",", ""))
		n += v
	}
	return n
}

// ---- the browser ------------------------------------------------------------

type browser struct {
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// chromiumPath finds Debian's chromium; without it the test is skipped,
// or fails under CI.
func chromiumPath(t *testing.T) string {
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	msg := "chromium is not installed: `apt-get install chromium` (or CONNPIPE_BROWSER=1 scripts/testenv.sh up) to run the browser test"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure, not a skip")
	}
	t.Skip(msg)
	return ""
}

func newBrowser(t *testing.T, parent context.Context, path string) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("lang", "en-US"))
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	b := &browser{ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// noConsoleErrors fails on any error or exception in the console, except
// the browser's own note of a 4xx answer to a refused weight change.
// forgetRefusedReads clears the console of the 401s the page met while it
// had no read token, and fails on any other error.
func (b *browser) forgetRefusedReads(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException {
			continue
		}
		if m.Source == "network" && strings.Contains(m.Text, "401") &&
			(strings.HasSuffix(m.URL, "/api/v1/status") || strings.HasSuffix(m.URL, "/api/v1/stats") ||
				strings.HasSuffix(m.URL, "/api/v1/alerts") || strings.HasSuffix(m.URL, "/api/v1/history")) {
			continue
		}
		t.Errorf("console %s before the read token: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
	}
	b.console = nil
}

func (b *browser) noConsoleErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException {
			continue
		}
		if m.Source == "network" && (strings.HasSuffix(m.URL, "/api/v1/weights") || strings.Contains(m.URL, "/api/v1/records?since=5m&src=10.1.3&")) {
			continue // refusals the test provokes on purpose
		}
		t.Errorf("console %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
	}
}

func (b *browser) read(t *testing.T) page {
	t.Helper()
	p, err := chromedp.Run(b.ctx, chromedp.Evaluate[page](readPage))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return p
}

// waitPage reads the page every 200 ms until ok holds.
func (b *browser) waitPage(t *testing.T, d time.Duration, what string, ok func(page) bool) page {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := b.read(t)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			j, _ := json.MarshalIndent(p, "", " ")
			b.screenshot(t)
			t.Fatalf("page: %s: not within %s; it shows\n%s", what, d, j)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *browser) click(t *testing.T, id string) {
	t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Click(chromedp.ID(id))); err != nil {
		t.Fatalf("click #%s: %v", id, err)
	}
}

// reload presses "Reload current" and waits for the form to show version.
func (b *browser) reload(t *testing.T, version string) {
	t.Helper()
	loads := b.read(t).FormLoads
	b.click(t, "reload")
	b.waitPage(t, 5*time.Second, "form reloaded at version "+version, func(p page) bool {
		return p.FormLoads > loads && p.FormVer == version
	})
}

// typeInto focuses a field, empties it and types v, as a user would.
func (b *browser) typeInto(t *testing.T, id, v string) {
	t.Helper()
	clear := chromedp.Evaluate[chromedp.Void](`document.getElementById(` + strconv.Quote(id) + `).value = ""`)
	if err := chromedp.Do(b.ctx, chromedp.Click(chromedp.ID(id)), clear, chromedp.SendKeys(chromedp.ID(id), v)); err != nil {
		t.Fatalf("type into #%s: %v", id, err)
	}
}

func (b *browser) setWeights(t *testing.T, w map[string]string) {
	t.Helper()
	for _, name := range []string{"redis-a", "redis-b"} {
		if v, ok := w[name]; ok {
			b.typeInto(t, "w-"+name, v)
		}
	}
}

// apply clicks Apply and waits for the answer shown under the form.
func (b *browser) apply(t *testing.T, what string) page {
	t.Helper()
	return b.applyWith(t, "apply", what)
}

// applyWith clicks the button and waits for the answer under the form.
func (b *browser) applyWith(t *testing.T, button, what string) page {
	t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector("#form-result").dataset.status = "pending"`)); err != nil {
		t.Fatal(err)
	}
	b.click(t, button)
	return b.waitPage(t, 15*time.Second, what+": an answer under the form", func(p page) bool {
		return p.Result.Status != "pending" && p.Result.Status != "" && p.Result.Text != "sending…"
	})
}

// checkShares compares the page's observed shares with the records read
// from Redis over the window the page states, and returns the page's
// shares in percent.
func (b *browser) checkShares(t *testing.T, e *apptest.Env, p page) map[string]float64 {
	t.Helper()
	if p.ShareFrom == 0 || p.ShareTo < p.ShareFrom {
		t.Fatalf("page states no share window: %d..%d", p.ShareFrom, p.ShareTo)
	}
	counts := map[string]int{}
	total := 0
	for _, be := range e.Backends {
		rdb := redis.NewClient(&redis.Options{Addr: be.Addr})
		n := 0
		err := e.Layout.Read(context.Background(), rdb, p.ShareFrom, p.ShareTo, store.Filter{}, func(*record.Record) { n++ })
		rdb.Close()
		if err != nil {
			t.Fatalf("read %s: %v", be.Name, err)
		}
		counts[be.Name] = n
		total += n
	}
	out := map[string]float64{}
	for _, be := range e.Backends {
		shown := p.observed(be.Name)
		redisShare := 100 * float64(counts[be.Name]) / float64(total)
		t.Logf("%s: page %.1f %%, Redis %.2f %% (%d of %d records in seconds %d..%d)", be.Name, shown, redisShare, counts[be.Name], total, p.ShareFrom, p.ShareTo)
		if math.Abs(shown-redisShare) > 2 {
			t.Errorf("%s: observed share on the page %.1f %%, Redis says %.2f %%: more than 2 points apart", be.Name, shown, redisShare)
		}
		out[be.Name] = shown
	}
	return out
}

// screenshot saves the page as PNG at CONNPIPE_SCREENSHOT (default
// connpipe-admin-page.png in the temporary directory) and fails if it is
// blank.
func (b *browser) screenshot(t *testing.T) {
	t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := os.Getenv("CONNPIPE_SCREENSHOT")
	if path == "" {
		path = filepath.Join(os.TempDir(), "connpipe-admin-page.png")
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	colours := distinctColours(img)
	t.Logf("screenshot %s: %dx%d, %d colours", path, img.Bounds().Dx(), img.Bounds().Dy(), colours)
	if colours < 64 || img.Bounds().Dy() < 400 {
		t.Errorf("screenshot %s looks blank: %d colours, %dx%d", path, colours, img.Bounds().Dx(), img.Bounds().Dy())
	}
}

func distinctColours(img image.Image) int {
	seen := map[uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			seen[cr>>8<<16|cg>>8<<8|cb>>8] = true
		}
	}
	return len(seen)
}

// ---- the system -------------------------------------------------------------

// build compiles the named services into a temporary directory.
func build(t *testing.T, names ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for _, n := range names {
		bin := filepath.Join(dir, n)
		cmd := exec.Command("go", "build", "-o", bin, "github.com/connpipe/connpipe/services/"+n)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s (needs the workspace, go.work): %v\n%s", n, err, b)
		}
		out[n] = bin
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a binary until the test ends (SIGTERM, then SIGKILL after
// 10 s); its output is logged if the test fails.
func start(t *testing.T, name, bin string, env map[string]string) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10s of SIGTERM", name)
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, out.String())
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// publishRecords publishes a binary batch of 100 records every 100 ms, as
// capture would, until ctx ends.
func publishRecords(t *testing.T, ctx context.Context, url string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("feed: dial: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("feed: channel: %v", err)
		return
	}
	var enc record.Encoder
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		enc.Reset(now)
		for i := range 100 {
			r := record.Record{TS: now, Src: netip.AddrFrom4([4]byte{10, 1, byte(n), byte(i)}), Dst: netip.MustParseAddr("10.0.0.1"),
				SrcPort: uint16(40000 + i), DstPort: 8080, Flags: record.FlagSYN, IPLen: 60}
			enc.Add(&r)
		}
		err := ch.PublishWithContext(ctx, topology.RecordsExchange, "", false, false, amqp.Publishing{
			ContentType: record.ContentTypeBinary, Headers: amqp.Table{record.VersionHeader: int32(record.Version)},
			DeliveryMode: amqp.Persistent, Body: bytes.Clone(enc.Bytes()),
		})
		if err != nil && ctx.Err() == nil {
			t.Errorf("feed: publish: %v", err)
			return
		}
	}
}

// connect opens a short TCP connection to the capture's sink every 250 ms.
func connect(ctx context.Context, port int) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			_, _ = c.Write([]byte("hello\n"))
			c.Close()
		}
	}
}

// cleanBuckets deletes the test's buckets from both instances at the end.
func cleanBuckets(t *testing.T, e *apptest.Env, from time.Time) {
	for _, be := range e.Backends {
		cleanup(t, e, be.Addr, from)
	}
}

// cleanup deletes the test's buckets from the instance at addr at the end.
func cleanup(t *testing.T, e *apptest.Env, addr string, from time.Time) {
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		_ = e.Layout.Purge(context.Background(), rdb, from.Unix()-5, time.Now().Unix()+5)
		rdb.Close()
	})
}

func waitStatus(t *testing.T, e *apptest.Env, d time.Duration, what string, ok func(apitypes.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var st apitypes.Status
		a := e.Read(t, "/api/v1/status")
		if err := json.Unmarshal(a.Body, &st); err == nil && ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; status %s", what, d, a.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expectWeights checks the API's table.
func expectWeights(t *testing.T, e *apptest.Env, version int64, weights string) {
	t.Helper()
	var tb control.Table
	a := e.Read(t, "/api/v1/weights")
	if err := json.Unmarshal(a.Body, &tb); err != nil {
		t.Fatalf("weights: %d %s", a.Code, a.Body)
	}
	if tb.Version != version || tb.String() != weights {
		t.Errorf("API weights: version %d %s, want version %d %s", tb.Version, tb.String(), version, weights)
	}
}
