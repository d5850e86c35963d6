package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/members"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeControl stands in for the control-log reader in unit tests of the
// handlers' logic; the real reader is exercised in package app's tests.
type fakeControl struct {
	table     *control.Table
	ready     bool
	verdict   func(m control.Message) (control.Result, *control.Table, error)
	published []control.Message
}

func (f *fakeControl) Table() *control.Table { return f.table }
func (f *fakeControl) IsReady() bool         { return f.ready }
func (f *fakeControl) Broker() broker.Status {
	if f.ready {
		return broker.Status{State: broker.StateUp}
	}
	return broker.Status{State: broker.StateDown, Reason: "dial: connection refused"}
}
func (f *fakeControl) Publish(_ context.Context, m control.Message) (control.Result, *control.Table, error) {
	f.published = append(f.published, m)
	return f.verdict(m)
}

func newTestAPI(t *testing.T, fc *fakeControl) http.Handler {
	t.Helper()
	tb, err := control.NewTable([]control.Backend{{Name: "redis-a", Addr: "127.0.0.1:1", Weight: 30}, {Name: "redis-b", Addr: "127.0.0.1:2", Weight: 70}})
	if err != nil {
		t.Fatal(err)
	}
	if fc.table == nil {
		fc.table = tb
	}
	set := members.New(time.Second, nil)
	mux := http.NewServeMux()
	New(Config{
		Token: "tok", Control: fc, Members: set,
		Metrics: NewMetrics(prometheus.NewRegistry(), set.Alive, func() int64 { return fc.table.Version }, fc.IsReady),
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}).Register(mux)
	return mux
}

func put(h http.Handler, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPut, "/api/v1/weights", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// The fold's verdict decides, even when the local check passed.
func TestVerdictIsTheAuthority(t *testing.T) {
	tests := []struct {
		name    string
		verdict func(control.Message) (control.Result, *control.Table, error)
		code    int
		want    string
	}{
		{"publish fails", func(control.Message) (control.Result, *control.Table, error) {
			return control.Result{}, nil, errors.New("control log: not connected to rabbitmq")
		}, http.StatusServiceUnavailable, "not connected"},
		{"no verdict in time", func(control.Message) (control.Result, *control.Table, error) {
			return control.Result{}, nil, fmt.Errorf("published x but saw no verdict: %w", context.DeadlineExceeded)
		}, http.StatusServiceUnavailable, "saw no verdict"},
		{"another writer got there first", func(control.Message) (control.Result, *control.Table, error) {
			t := &control.Table{Version: 1, Position: 5}
			return control.Result{Position: 5, Err: fmt.Errorf("%w: expected version 0, table is at 1", control.ErrStaleVersion)}, t, nil
		}, http.StatusConflict, "stale version"},
		{"refused by the fold", func(control.Message) (control.Result, *control.Table, error) {
			return control.Result{Position: 5, Err: control.ErrNoCapacity}, &control.Table{Version: 1}, nil
		}, http.StatusBadRequest, "every backend at weight 0"},
	}
	for _, tt := range tests {
		fc := &fakeControl{ready: true, verdict: tt.verdict}
		w := put(newTestAPI(t, fc), `{"weights":{"redis-a":1}}`, map[string]string{"If-Match": `"0"`})
		if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.want) {
			t.Errorf("%s: %d %s, want %d with %q", tt.name, w.Code, w.Body, tt.code, tt.want)
		}
		if len(fc.published) != 1 {
			t.Fatalf("%s: published %d messages, want 1", tt.name, len(fc.published))
		}
		m := fc.published[0]
		if m.Op != control.OpSetWeights || m.By != "admin" || !strings.HasPrefix(m.ID, "admin-") || m.ExpectVersion == nil || *m.ExpectVersion != 0 || m.Weights["redis-a"] != 1 {
			t.Errorf("%s: published %+v", tt.name, m)
		}
	}
}

func TestNotReadyPublishesNothing(t *testing.T) {
	fc := &fakeControl{verdict: func(control.Message) (control.Result, *control.Table, error) {
		t.Fatal("published while not ready")
		return control.Result{}, nil, nil
	}}
	h := newTestAPI(t, fc)
	if w := put(h, `{"weights":{"redis-a":1}}`, nil); w.Code != http.StatusServiceUnavailable {
		t.Errorf("PUT not ready: %d %s", w.Code, w.Body)
	}
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/weights", nil)
	req.Header.Set("Authorization", "Bearer tok")
	h.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET not ready: %d %s", w.Code, w.Body)
	}
}

func TestParseIfMatch(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // -1: none
		err  bool
	}{
		{"", -1, false}, {"*", -1, false}, {`"3"`, 3, false}, {`W/"12"`, 12, false}, {"7", 7, false},
		{`"x"`, 0, true}, {`"-1"`, 0, true}, {`"3", "4"`, 0, true},
	}
	for _, tt := range tests {
		got, err := parseIfMatch(tt.in)
		switch {
		case tt.err:
			if err == nil {
				t.Errorf("parseIfMatch(%q) = %v, want an error", tt.in, got)
			}
		case err != nil:
			t.Errorf("parseIfMatch(%q): %v", tt.in, err)
		case tt.want == -1 && got != nil, tt.want >= 0 && (got == nil || *got != tt.want):
			t.Errorf("parseIfMatch(%q) = %v, want %d", tt.in, got, tt.want)
		}
	}
}

func TestUsedMemory(t *testing.T) {
	info := "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:2000\r\n"
	if got := usedMemory(info); got != 1048576 {
		t.Errorf("usedMemory = %d, want 1048576", got)
	}
	if got := usedMemory("# Memory\r\n"); got != -1 {
		t.Errorf("usedMemory without the field = %d, want -1", got)
	}
}

func TestWeightsResponseShape(t *testing.T) {
	b, err := json.Marshal(apitypes.WeightsResponse{Table: control.Table{Version: 2, Position: 9, Backends: []control.Backend{{Name: "a", Addr: "h:1", Weight: 3}}}, Pending: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"position":9,"backends":[{"name":"a","addr":"h:1","weight":3}],"change_position":0,"id":"","converged":false,"pending":[],"consumers_alive":0}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
