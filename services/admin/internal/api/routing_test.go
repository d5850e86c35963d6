package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/control"
)

// foldingControl answers every publish with the real fold of the message
// onto its table, as the control log would.
func foldingControl() *fakeControl {
	fc := &fakeControl{ready: true}
	fc.verdict = func(m control.Message) (control.Result, *control.Table, error) {
		body, _ := json.Marshal(m)
		next, res := control.Apply(fc.table, fc.table.Position+1, body)
		fc.table = next
		return res, next, nil
	}
	return fc
}

func send(h http.Handler, method, path, body, token string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestRoutingEndpoints(t *testing.T) {
	steps := []struct {
		name         string
		method, path string
		body         string
		token        string
		header       map[string]string
		code         int
		want         string // in the body
		published    bool
		table        string // Describe after
	}{
		{"add", "POST", "/api/v1/backends", `{"name":"redis-c","addr":"127.0.0.1:6381","weight":50}`, "tok", nil,
			200, `"name":"redis-c"`, true, "v1 mode=weighted sticky=false redis-a=30@127.0.0.1:1 redis-b=70@127.0.0.1:2 redis-c=50@127.0.0.1:6381"},
		{"add without token", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"127.0.0.1:6382"}`, "", nil,
			401, "missing token", false, ""},
		{"add wrong token", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"127.0.0.1:6382"}`, "nope", nil,
			403, "wrong token", false, ""},
		{"add duplicate", "POST", "/api/v1/backends", `{"name":"redis-c","addr":"127.0.0.1:6382"}`, "tok", nil,
			400, "already exists", false, ""},
		{"add bad addr", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"localhost"}`, "tok", nil,
			400, "want host:port", false, ""},
		// A password would be kept in the control log: refused, nothing
		// published, the way out named, the password not echoed.
		{"add inline password", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"redis://u:inline-Pa55@h:1/0"}`, "tok", nil,
			400, `send \"credential\":\"NAME\" (admin backends add redis-d redis://u:xxxxx@h:1/0 --credential NAME)`, false, ""},
		{"add password and credential", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"redis://:inline-Pa55@h:1","credential":"pool"}`, "tok", nil,
			400, "REDIS_CREDENTIALS", false, ""},
		{"add bad credential name", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"h:1","credential":"a b"}`, "tok", nil,
			400, "credential", false, ""},
		{"add unknown field", "POST", "/api/v1/backends", `{"name":"redis-d","address":"h:1"}`, "tok", nil,
			400, "unknown field", false, ""},
		{"add stale", "POST", "/api/v1/backends", `{"name":"redis-d","addr":"h:1"}`, "tok", map[string]string{"If-Match": `"0"`},
			409, "stale version", false, ""},
		{"add default weight", "POST", "/api/v1/backends?wait=1s", `{"name":"redis-d","addr":"h:1"}`, "tok", map[string]string{"If-Match": `"1"`},
			200, `"converged":true`, true, "v2 mode=weighted sticky=false redis-a=30@127.0.0.1:1 redis-b=70@127.0.0.1:2 redis-c=50@127.0.0.1:6381 redis-d=1@h:1"},
		{"remove", "DELETE", "/api/v1/backends/redis-d", "", "tok", nil,
			200, `"version":3`, true, "v3 mode=weighted sticky=false redis-a=30@127.0.0.1:1 redis-b=70@127.0.0.1:2 redis-c=50@127.0.0.1:6381"},
		{"remove unknown", "DELETE", "/api/v1/backends/redis-z", "", "tok", nil,
			400, "unknown backend", false, ""},
		{"mode hash sticky", "PUT", "/api/v1/mode", `{"mode":"hash","hash_key":"flow","sticky":true}`, "tok", nil,
			200, `"mode":"hash"`, true, "v4 mode=hash key=flow sticky=true redis-a=30@127.0.0.1:1 redis-b=70@127.0.0.1:2 redis-c=50@127.0.0.1:6381"},
		{"mode bad", "PUT", "/api/v1/mode", `{"mode":"random"}`, "tok", nil,
			400, "bad routing mode", false, ""},
		{"mode empty", "PUT", "/api/v1/mode", `{}`, "tok", nil,
			400, "set_mode without", false, ""},
	}
	fc := foldingControl()
	h := newTestAPI(t, fc)
	for _, s := range steps {
		before := len(fc.published)
		w := send(h, s.method, s.path, s.body, s.token, s.header)
		if w.Code != s.code || !strings.Contains(w.Body.String(), s.want) || strings.Contains(w.Body.String(), "inline-Pa55") {
			t.Fatalf("%s: %d %s, want %d with %q", s.name, w.Code, w.Body, s.code, s.want)
		}
		if got := len(fc.published) > before; got != s.published {
			t.Fatalf("%s: published=%v, want %v", s.name, got, s.published)
		}
		if s.table != "" && fc.table.Describe() != s.table {
			t.Fatalf("%s: table %s, want %s", s.name, fc.table.Describe(), s.table)
		}
	}
	last := fc.published[len(fc.published)-1]
	if last.By != "admin" || !strings.HasPrefix(last.ID, "admin-") {
		t.Fatalf("published %+v", last)
	}
}
