package app_test

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/redisconn"
)

// TestBackendAllow: admin publishes no add_backend to a host outside
// BACKEND_ALLOW (default: the hosts of BACKENDS), and one published by
// hand is shown as not_allowed, in words, and never dialled — not for
// status, stats nor records.
func TestBackendAllow(t *testing.T) {
	e := apptest.Start(t, nil)
	evil, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2 (the host outside BACKEND_ALLOW): %v", err)
	}
	defer evil.Close()
	var dialled atomic.Int64
	go func() {
		for {
			c, err := evil.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()

	a := apptest.Call(t, "POST", e.URL+"/api/v1/backends", fmt.Sprintf(`{"name":"evil","addr":%q,"weight":200}`, evil.Addr().String()), bearer(e.Token))
	if a.Code != 400 || !strings.Contains(string(a.Body), "not in BACKEND_ALLOW") {
		t.Fatalf("POST backend outside BACKEND_ALLOW: %d %s, want 400 naming BACKEND_ALLOW", a.Code, a.Body)
	}
	if tb, _ := getTable(t, e); tb.Version != 0 {
		t.Fatalf("refused add_backend was published: version %d", tb.Version)
	}

	// By hand, past admin: the fold takes it (as on every reader), admin
	// shows it refused.
	e.Control(t, fmt.Sprintf(`{"op":"add_backend","backend":{"name":"evil","addr":"redis://u:s3cret@%s","weight":200}}`, evil.Addr()))
	var st api.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.Read(t, "/api/v1/status").Decode(t, &st)
		if st.Table.Version == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var found *api.BackendStatus
	for i := range st.Backends {
		if st.Backends[i].Name == "evil" {
			found = &st.Backends[i]
		}
	}
	if found == nil || found.State != redisconn.StateNotAllowed || !strings.Contains(found.Error, "not in BACKEND_ALLOW") || found.Reachable {
		t.Fatalf("status of evil: %+v", found)
	}
	body := string(e.Read(t, "/api/v1/status").Body)
	stats := string(e.Read(t, "/api/v1/stats").Body)
	recs := e.Read(t, "/api/v1/records?since=1m")
	weights := string(e.Read(t, "/api/v1/weights").Body)
	for what, s := range map[string]string{"status": body, "stats": stats, "records": string(recs.Body), "weights": weights} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("%s shows the password: %s", what, s)
		}
	}
	if strings.Contains(string(recs.Body), "evil") || recs.Code != 200 {
		t.Errorf("records ask evil: %d %s", recs.Code, recs.Body)
	}
	time.Sleep(200 * time.Millisecond)
	if n := dialled.Load(); n != 0 {
		t.Fatalf("admin dialled the host outside BACKEND_ALLOW %d times", n)
	}
	var tb control.Table
	e.Read(t, "/api/v1/weights").Decode(t, &tb)
	if b, ok := tb.Backend("evil"); !ok || b.Addr != "redis://u:xxxxx@"+evil.Addr().String() {
		t.Errorf("weights: evil %+v, want its address redacted", b)
	}
}
