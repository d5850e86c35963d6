package app_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/testenv"
)

// A sentinel backend is added at runtime, shown with the primary the
// sentinels name and its replicas, and removed again; one whose sentinels
// are outside BACKEND_ALLOW is refused.
func TestSentinelBackendAddRemove(t *testing.T) {
	sentinels, master := testenv.Sentinels(t)
	e := apptest.Start(t, func(c *app.Config) {
		c.BackendAllow = strings.Join(append([]string{"127.0.0.1:6389", "127.0.0.1:6390", "127.0.0.1:6392", "127.0.0.1:6393"}, sentinels...), ",")
	})
	addr := "sentinel://" + strings.Join(sentinels, ",") + "/" + master
	outside := "sentinel://127.0.0.2:26392/" + master
	if a := apptest.Call(t, "POST", e.URL+"/api/v1/backends", fmt.Sprintf(`{"name":"evil","addr":%q,"weight":0}`, outside), bearer(e.Token)); a.Code != 400 ||
		!strings.Contains(string(a.Body), "not in BACKEND_ALLOW") {
		t.Fatalf("POST sentinel backend outside BACKEND_ALLOW: %d %s", a.Code, a.Body)
	}
	if a := apptest.Call(t, "POST", e.URL+"/api/v1/backends", fmt.Sprintf(`{"name":"ha","addr":%q,"weight":0}`, addr), bearer(e.Token)); a.Code != 200 {
		t.Fatalf("POST sentinel backend: %d %s", a.Code, a.Body)
	}
	primary := testenv.SentinelPrimary(t, sentinels[0], master)
	ha := waitBackend(t, e, "ha", func(b *api.BackendStatus) bool { return b != nil && b.Sentinel != nil })
	if !ha.Reachable || ha.Sentinel.Primary != primary || len(ha.Sentinel.Replicas) != 1 || !strings.HasSuffix(ha.Sentinel.Replicas[0], " online") {
		t.Fatalf("status of the sentinel backend: %+v (sentinel %+v), want primary %s with one replica online", ha, ha.Sentinel, primary)
	}
	if a := apptest.Call(t, "DELETE", e.URL+"/api/v1/backends/ha", "", bearer(e.Token)); a.Code != 200 {
		t.Fatalf("DELETE sentinel backend: %d %s", a.Code, a.Body)
	}
	waitBackend(t, e, "ha", func(b *api.BackendStatus) bool { return b == nil })
}

// waitBackend polls the status until ok holds for the backend named name
// (nil when the table has none) and returns it.
func waitBackend(t *testing.T, e *apptest.Env, name string, ok func(*api.BackendStatus) bool) *api.BackendStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st api.Status
		e.Read(t, "/api/v1/status").Decode(t, &st)
		var found *api.BackendStatus
		for i := range st.Backends {
			if st.Backends[i].Name == name {
				found = &st.Backends[i]
			}
		}
		if ok(found) {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %s: %+v after 10 s", name, found)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
