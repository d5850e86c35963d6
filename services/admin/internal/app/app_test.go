package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/record"
)

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func getTable(t *testing.T, e *apptest.Env) (control.Table, string) {
	t.Helper()
	a := e.Read(t, "/api/v1/weights")
	if a.Code != http.StatusOK {
		t.Fatalf("GET weights: %d %s", a.Code, a.Body)
	}
	var tb control.Table
	a.Decode(t, &tb)
	return tb, a.Header.Get("ETag")
}

// setWeightsMessages folds the control log with a reader of its own and
// returns every set_weights message in it, once the message with id last
// (if not empty) has been folded.
func setWeightsMessages(t *testing.T, e *apptest.Env, last string) []control.Result {
	t.Helper()
	initial, _ := e.Config.Validate()
	r := controllog.New(controllog.Config{URL: e.Config.AMQPURL, Name: "test-audit", Initial: initial, Logger: discard()})
	results, unsub := r.Subscribe()
	defer unsub()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var out []control.Result
	seenLast := last == ""
	ready := r.Ready()
	for {
		select {
		case res := <-results:
			if res.Message.Op == control.OpSetWeights {
				out = append(out, res)
			}
			if res.Message.ID == last {
				seenLast = true
			}
		case <-ready:
			ready = nil
		case <-ctx.Done():
			t.Fatalf("control log not read within 30s (seen %d set_weights)", len(out))
		}
		if ready == nil && seenLast && len(results) == 0 {
			return out
		}
	}
}

func TestWritesNeedTheToken(t *testing.T) {
	e := apptest.Start(t, nil)
	body := `{"weights":{"redis-a":50}}`
	tests := []struct {
		name   string
		header map[string]string
		code   int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"not bearer", map[string]string{"Authorization": "Basic " + e.Token}, http.StatusUnauthorized},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, http.StatusUnauthorized},
		{"wrong token", bearer(e.Token + "x"), http.StatusForbidden},
	}
	for _, tt := range tests {
		a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", body, tt.header)
		if a.Code != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.name, a.Code, a.Body, tt.code)
		}
	}
	if tb, _ := getTable(t, e); tb.Version != 0 || tb.String() != "redis-a=30 redis-b=70" {
		t.Errorf("after refused writes: version %d %s, want 0 redis-a=30 redis-b=70", tb.Version, tb.String())
	}
	// One good write, then the log must hold exactly that one change.
	a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", body, bearer(e.Token))
	if a.Code != http.StatusOK {
		t.Fatalf("PUT with the token: %d %s", a.Code, a.Body)
	}
	var res apitypes.WeightsResponse
	a.Decode(t, &res)
	msgs := setWeightsMessages(t, e, res.ID)
	if len(msgs) != 1 || msgs[0].Message.ID != res.ID || msgs[0].Message.By != "admin" {
		t.Fatalf("control log holds %+v, want only the authorized change %s", msgs, res.ID)
	}
}

func TestSetWeights(t *testing.T) {
	e := apptest.Start(t, nil)
	tb, tag := getTable(t, e)
	if tb.Version != 0 || tag != `"0"` || len(tb.Backends) != 2 || tb.Backends[0].Addr != e.Backends[0].Addr {
		t.Fatalf("initial table %+v etag %s", tb, tag)
	}
	steps := []struct {
		body    string
		ifMatch string
		want    string
	}{
		{`{"weights":{"redis-a":50,"redis-b":50}}`, `"0"`, "redis-a=50 redis-b=50"},
		{`{"weights":{"redis-a":0}}`, "", "redis-a=0 redis-b=50"},
		{`{"weights":{"redis-a":256},"expect_version":2}`, "", "redis-a=256 redis-b=50"},
		{`{"weights":{"redis-b":1}}`, `W/"3"`, "redis-a=256 redis-b=1"},
	}
	for i, st := range steps {
		h := bearer(e.Token)
		if st.ifMatch != "" {
			h["If-Match"] = st.ifMatch
		}
		a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", st.body, h)
		if a.Code != http.StatusOK {
			t.Fatalf("step %d: %d %s", i, a.Code, a.Body)
		}
		var res apitypes.WeightsResponse
		a.Decode(t, &res)
		if res.Version != int64(i+1) || res.String() != st.want || a.Header.Get("ETag") != fmt.Sprintf(`"%d"`, i+1) {
			t.Fatalf("step %d: version %d %q etag %s, want %d %q", i, res.Version, res.String(), a.Header.Get("ETag"), i+1, st.want)
		}
		if res.ChangePosition != res.Position {
			t.Errorf("step %d: change at %d but table position %d", i, res.ChangePosition, res.Position)
		}
		got, tag := getTable(t, e)
		if got.Version != int64(i+1) || got.String() != st.want || tag != fmt.Sprintf(`"%d"`, i+1) {
			t.Fatalf("step %d: GET shows version %d %q etag %s", i, got.Version, got.String(), tag)
		}
	}
	// An independent fold of the log agrees.
	if msgs := setWeightsMessages(t, e, ""); len(msgs) != len(steps) {
		t.Errorf("control log holds %d set_weights, want %d", len(msgs), len(steps))
	}
}

func TestStaleVersionConflicts(t *testing.T) {
	e := apptest.Start(t, nil)
	if a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":40}}`, bearer(e.Token)); a.Code != http.StatusOK {
		t.Fatalf("first change: %d %s", a.Code, a.Body)
	}
	for _, tt := range []struct {
		name, body, ifMatch string
	}{
		{"If-Match behind", `{"weights":{"redis-a":10}}`, `"0"`},
		{"expect_version behind", `{"weights":{"redis-a":10},"expect_version":0}`, ""},
		{"If-Match ahead", `{"weights":{"redis-a":10}}`, `"7"`}, // passes the local check; the fold refuses it
	} {
		h := bearer(e.Token)
		if tt.ifMatch != "" {
			h["If-Match"] = tt.ifMatch
		}
		a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", tt.body, h)
		var ae struct {
			Error   string `json:"error"`
			Version *int64 `json:"version"`
		}
		a.Decode(t, &ae)
		if a.Code != http.StatusConflict || !strings.Contains(ae.Error, "stale version") || ae.Version == nil || *ae.Version != 1 {
			t.Errorf("%s: %d %s, want 409 stale version at version 1", tt.name, a.Code, a.Body)
		}
	}
	if tb, _ := getTable(t, e); tb.Version != 1 || tb.String() != "redis-a=40 redis-b=70" {
		t.Errorf("after conflicts: version %d %s, want 1 redis-a=40 redis-b=70", tb.Version, tb.String())
	}
}

func TestRefusalsSayWhy(t *testing.T) {
	e := apptest.Start(t, nil)
	tests := []struct {
		name, body, header, want string
	}{
		{"unknown backend", `{"weights":{"redis-c":10}}`, "", `unknown backend "redis-c" (known: redis-a, redis-b)`},
		{"weight 300", `{"weights":{"redis-a":300}}`, "", `backend "redis-a": weight out of range 0..256: 300`},
		{"negative weight", `{"weights":{"redis-b":-1}}`, "", `weight out of range`},
		{"no capacity", `{"weights":{"redis-a":0,"redis-b":0}}`, "", `every backend at weight 0`},
		{"weight not an integer", `{"weights":{"redis-a":"abc"}}`, "", `weights["redis-a"]: "abc": weight must be an integer 0..256`},
		{"fractional weight", `{"weights":{"redis-a":1.5}}`, "", `weight must be an integer`},
		{"misspelt field", `{"weigths":{"redis-a":1}}`, "", `unknown field "weigths"`},
		{"no weights", `{}`, "", `"weights" is missing`},
		{"not JSON", `redis-a=1`, "", `body:`},
		{"bad If-Match", `{"weights":{"redis-a":1}}`, `abc`, `If-Match "abc"`},
		{"If-Match and expect_version disagree", `{"weights":{"redis-a":1},"expect_version":0}`, `"1"`, `disagree`},
	}
	for _, tt := range tests {
		h := bearer(e.Token)
		if tt.header != "" {
			h["If-Match"] = tt.header
		}
		a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", tt.body, h)
		var ae struct{ Error string }
		a.Decode(t, &ae)
		if a.Code != http.StatusBadRequest || !strings.Contains(ae.Error, tt.want) {
			t.Errorf("%s: %d %s, want 400 with %q", tt.name, a.Code, a.Body, tt.want)
		}
	}
	if a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights?wait=forever", `{"weights":{"redis-a":1}}`, bearer(e.Token)); a.Code != http.StatusBadRequest {
		t.Errorf("wait=forever: %d %s, want 400", a.Code, a.Body)
	}
	if tb, _ := getTable(t, e); tb.Version != 0 {
		t.Errorf("after refusals: version %d, want 0", tb.Version)
	}
	if msgs := setWeightsMessages(t, e, ""); len(msgs) != 0 {
		t.Errorf("refused bodies reached the control log: %+v", msgs)
	}
}

func TestConcurrentWritersOneWins(t *testing.T) {
	e := apptest.Start(t, nil)
	const n = 6
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := bearer(e.Token)
			h["If-Match"] = `"0"`
			codes[i] = apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", fmt.Sprintf(`{"weights":{"redis-a":%d}}`, 10+i), h).Code
		}()
	}
	wg.Wait()
	won, lost := 0, 0
	winner := -1
	for i, c := range codes {
		switch c {
		case http.StatusOK:
			won++
			winner = i
		case http.StatusConflict:
			lost++
		}
	}
	if won != 1 || lost != n-1 {
		t.Fatalf("codes %v: want exactly one 200 and %d 409", codes, n-1)
	}
	tb, _ := getTable(t, e)
	if tb.Version != 1 || tb.Weights()["redis-a"] != 10+winner {
		t.Errorf("table %s version %d, want redis-a=%d at version 1", tb.String(), tb.Version, 10+winner)
	}
}

func TestBrokerUnreachable(t *testing.T) {
	e := apptest.Start(t, nil)
	// A second admin whose broker is not there: it never reads the log.
	cfg := e.Config
	cfg.AMQPURL = "amqp://guest:guest@127.0.0.1:1/"
	s, err := app.Listen(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	url := "http://" + s.Addr()
	for _, tt := range []struct {
		method, path, body string
		code               int
	}{
		{http.MethodPut, "/api/v1/weights", `{"weights":{"redis-a":1}}`, http.StatusServiceUnavailable},
		{http.MethodGet, "/api/v1/weights", "", http.StatusServiceUnavailable},
		{http.MethodGet, "/healthz", "", http.StatusServiceUnavailable},
		{http.MethodGet, "/api/v1/status", "", http.StatusOK},
	} {
		if a := apptest.Call(t, tt.method, url+tt.path, tt.body, bearer(e.Token)); a.Code != tt.code {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, a.Code, a.Body, tt.code)
		}
	}
	var st apitypes.Status
	apptest.Call(t, http.MethodGet, url+"/api/v1/status", "", bearer(e.ReadToken)).Decode(t, &st)
	if st.Ready || st.Connected || !strings.Contains(st.Session, "connection refused") {
		t.Errorf("status without a broker says ready=%v connected=%v session %q", st.Ready, st.Connected, st.Session)
	}
	if a := apptest.Call(t, http.MethodGet, url+"/healthz", "", nil); !strings.Contains(string(a.Body), "connection refused") {
		t.Errorf("/healthz without a broker: %q, want it to say why", a.Body)
	}
}

func TestMembershipAndConvergence(t *testing.T) {
	e := apptest.Start(t, nil)
	status := func() apitypes.Status {
		var st apitypes.Status
		e.Read(t, "/api/v1/status").Decode(t, &st)
		return st
	}
	// Wait until the status shows what a heartbeat said.
	eventually := func(what string, ok func(apitypes.Status) bool) apitypes.Status {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st := status()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; status %+v", what, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	tb, _ := getTable(t, e)
	hb := func(id string, version, pos int64) heartbeat.Message {
		return heartbeat.Message{Consumer: id, Host: "h-" + id, Version: version, Position: pos, Ready: true, Records: 100, Acked: 7, SentAt: time.Now().UnixNano(), Interval: 1000}
	}
	e.Heartbeat(t, hb("c1", 0, tb.Position))
	e.Heartbeat(t, hb("c2", 0, tb.Position))
	e.PublishHeartbeat(t, []byte(`{"consumer":`)) // broken: counted, ignored
	st := eventually("two consumers alive", func(st apitypes.Status) bool { return st.ConsumersAlive == 2 })
	if !st.Converged || len(st.Consumers) != 2 || st.Consumers[0].ID != "c1" || st.Consumers[0].Host != "h-c1" ||
		st.Consumers[0].Records != 100 || st.Consumers[0].Acked != 7 || !st.Consumers[0].Converged {
		t.Fatalf("status %+v", st)
	}
	if len(st.Backends) != 2 || !st.Backends[0].Reachable || st.Backends[0].UsedMemory <= 0 || st.Backends[1].Share != 0.7 {
		t.Errorf("backends %+v", st.Backends)
	}

	// A change with ?wait: converges when both heartbeats reach its position.
	type result struct {
		a   apptest.Answer
		res apitypes.WeightsResponse
	}
	got := make(chan result, 1)
	go func() {
		a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights?wait=20s", `{"weights":{"redis-a":60}}`, bearer(e.Token))
		var r apitypes.WeightsResponse
		_ = json.Unmarshal(a.Body, &r)
		got <- result{a, r}
	}()
	var pos int64
	eventually("change applied", func(st apitypes.Status) bool { pos = st.Table.Position; return st.Table.Version == 1 })
	eventually("consumers behind", func(st apitypes.Status) bool { return !st.Converged })
	e.Heartbeat(t, hb("c1", 1, pos))
	select {
	case r := <-got:
		t.Fatalf("wait returned before c2 applied the change: %d %s", r.a.Code, r.a.Body)
	case <-time.After(300 * time.Millisecond):
	}
	e.Heartbeat(t, hb("c2", 1, pos))
	select {
	case r := <-got:
		if r.a.Code != http.StatusOK || !r.res.Converged || len(r.res.Pending) != 0 || r.res.ConsumersAlive != 2 || r.res.ChangePosition > pos {
			t.Fatalf("wait answer %d %s", r.a.Code, r.a.Body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("wait did not return after both consumers applied the change")
	}

	// A change nobody applies: the wait times out naming the laggards.
	a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights?wait=300ms", `{"weights":{"redis-a":61}}`, bearer(e.Token))
	var r apitypes.WeightsResponse
	a.Decode(t, &r)
	if a.Code != http.StatusOK || r.Converged || !slices.Equal(r.Pending, []string{"c1", "c2"}) {
		t.Fatalf("unconverged wait: %d %s", a.Code, a.Body)
	}

	// c1 keeps heartbeating, c2 stops: c2 is dead after CONSUMER_TIMEOUT (2s)
	// and no longer holds convergence.
	stop := make(chan struct{})
	var beats sync.WaitGroup
	beats.Add(1)
	go func() {
		defer beats.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				e.Heartbeat(t, hb("c1", 2, r.ChangePosition))
			}
		}
	}()
	defer func() { close(stop); beats.Wait() }()
	st = eventually("c2 dead", func(st apitypes.Status) bool { return st.ConsumersAlive == 1 })
	if len(st.Consumers) != 2 || !st.Consumers[0].Alive || st.Consumers[1].Alive || st.Consumers[1].Converged || !st.Converged {
		t.Fatalf("after c2 stopped: %+v", st)
	}
	if st.Consumers[1].HeartbeatAgeMS < 2000 {
		t.Errorf("c2 dead with a heartbeat age of %dms", st.Consumers[1].HeartbeatAgeMS)
	}

	m := string(apptest.Call(t, http.MethodGet, "http://"+e.Server.MetricsAddr()+"/metrics", "", nil).Body)
	for _, want := range []string{
		`connpipe_admin_consumers_alive 1`,
		`connpipe_admin_control_version 2`,
		`connpipe_admin_control_published_total{result="applied"} 2`,
		`connpipe_admin_heartbeats_total{result="invalid"} 1`,
		`connpipe_admin_http_requests_total{code="200",route="PUT /api/v1/weights"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestRecordsAcrossInstances(t *testing.T) {
	e := apptest.Start(t, nil)
	now := time.Now()
	rec := func(ago time.Duration, src string, port uint16) record.Record {
		return record.Record{TS: now.Add(-ago).UnixNano(), Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("10.9.9.9"), SrcPort: port, DstPort: 80, Flags: record.FlagSYN, IPLen: 60}
	}
	e.WriteRecords(t, 0, rec(30*time.Second, "10.0.0.7", 1), rec(20*time.Second, "10.0.0.8", 2))
	e.WriteRecords(t, 1, rec(10*time.Second, "10.0.0.7", 3), rec(90*time.Second, "10.0.0.7", 4))
	a := e.Read(t, "/api/v1/records?since=1m&src=10.0.0.7")
	var res apitypes.RecordsResponse
	a.Decode(t, &res)
	if a.Code != http.StatusOK || len(res.Records) != 2 || res.Records[0].Backend != "redis-a" || *res.Records[0].SrcPort != 1 ||
		res.Records[1].Backend != "redis-b" || *res.Records[1].SrcPort != 3 || res.CountByBackend["redis-a"] != 1 || res.CountByBackend["redis-b"] != 1 || res.Truncated {
		t.Fatalf("records: %d %s", a.Code, a.Body)
	}
	// Counts: a plain window from the counters, a filtered one by reading.
	for _, c := range []struct {
		q            string
		a, b, total  int64
		fromCounters bool
	}{
		{"since=1m&count=true", 2, 1, 3, true},
		{"since=2m&count=true", 2, 2, 4, true},
		{"since=1m&src=10.0.0.7&count=true", 1, 1, 2, false},
	} {
		a := e.Read(t, "/api/v1/records?"+c.q)
		var res apitypes.CountResponse
		a.Decode(t, &res)
		if a.Code != http.StatusOK || res.CountByBackend["redis-a"] != c.a || res.CountByBackend["redis-b"] != c.b ||
			res.Total != c.total || (res.Source == "counters") != c.fromCounters {
			t.Errorf("records?%s: %d %s", c.q, a.Code, a.Body)
		}
	}
	for _, q := range []string{"since=yesterday", "src=10.0.0", "limit=0", "limit=x", "since=1m&until=2m", "since=1m&until=2m&count=true"} {
		if a := e.Read(t, "/api/v1/records?"+q); a.Code != http.StatusBadRequest {
			t.Errorf("records?%s: %d %s, want 400", q, a.Code, a.Body)
		}
	}
}

func TestConfig(t *testing.T) {
	base := app.Config{Pool: config.Pool{Backends: "redis-a=127.0.0.1:6379", Weights: "redis-a=1"}, Store: config.Store{RedisPrefix: "cp:", Retention: time.Minute},
		ConsumerTimeout: time.Second, HTTPAddr: ":0", Auth: apitypes.Auth{Token: "t"},
		Metrics: config.Metrics{MetricsAddr: ":0"}, ReadTimeout: time.Second, WriteTimeout: time.Minute, IdleTimeout: time.Second}
	tests := []struct {
		name string
		edit func(*app.Config)
		want string // "" for valid
	}{
		{"valid", func(*app.Config) {}, ""},
		{"no token", func(c *app.Config) { c.Token = " " }, "ADMIN_TOKEN is empty"},
		{"no token, insecure", func(c *app.Config) { c.Token, c.Insecure = "", true }, ""},
		{"bad backends", func(c *app.Config) { c.Backends = "redis-a" }, "BACKENDS item"},
		{"bad weights", func(c *app.Config) { c.Weights = "redis-a=x" }, "WEIGHTS item"},
		{"zero capacity", func(c *app.Config) { c.Weights = "redis-a=0" }, "every backend at weight 0"},
		{"zero retention", func(c *app.Config) { c.Retention = 0 }, "RETENTION"},
		{"zero timeout", func(c *app.Config) { c.ConsumerTimeout = 0 }, "CONSUMER_TIMEOUT"},
		{"capture url", func(c *app.Config) { c.CaptureMetricsURL = "http://127.0.0.1:9100/metrics" }, ""},
		{"bad capture url", func(c *app.Config) { c.CaptureMetricsURL = "127.0.0.1:9100" }, "CAPTURE_METRICS_URL"},
		{"no metrics addr", func(c *app.Config) { c.MetricsAddr = "" }, "METRICS_ADDR"},
		{"zero idle timeout", func(c *app.Config) { c.IdleTimeout = 0 }, "HTTP_IDLE_TIMEOUT"},
		{"cert without key", func(c *app.Config) { c.TLSCert = "cert.pem" }, "TLS_CERT and TLS_KEY"},
	}
	for _, tt := range tests {
		c := base
		tt.edit(&c)
		_, err := c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}
