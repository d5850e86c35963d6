package app_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/testenv"
)

// closeConnections makes RabbitMQ close every client connection of the
// test's virtual host (what a broker restart does to admin), and returns
// how many it closed.
func closeConnections(t *testing.T, amqpURL string) int {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	mgmt, err := url.Parse(testenv.Management(t))
	if err != nil {
		t.Fatal(err)
	}
	user := mgmt.User.Username()
	pass, _ := mgmt.User.Password()
	mgmt.User = nil
	base := strings.TrimRight(mgmt.String(), "/")
	req, _ := http.NewRequest(http.MethodGet, base+"/api/vhosts/"+url.PathEscape(vhost)+"/connections", nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("list connections: %v", err)
	}
	defer resp.Body.Close()
	var conns []struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&conns); err != nil {
		t.Fatalf("list connections: %v", err)
	}
	for _, c := range conns {
		req, _ := http.NewRequest(http.MethodDelete, base+"/api/connections/"+url.PathEscape(c.Name), nil)
		req.SetBasicAuth(user, pass)
		req.Header.Set("X-Reason", "test: simulated broker restart")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("close connection %s: %v", c.Name, err)
		}
		resp.Body.Close()
	}
	return len(conns)
}

func TestReconnectsAfterLosingTheBroker(t *testing.T) {
	e := apptest.Start(t, nil)
	if a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":11}}`, bearer(e.Token)); a.Code != http.StatusOK {
		t.Fatalf("change before: %d %s", a.Code, a.Body)
	}
	// The management API lists connections a few seconds late.
	deadline := time.Now().Add(15 * time.Second)
	for n := 0; n < 2; n = closeConnections(t, e.Config.AMQPURL) {
		if time.Now().After(deadline) {
			t.Fatalf("closed %d of admin's connections, want its 2 (control log, heartbeats)", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Writes come back once admin has dialled again and refolded the log.
	var res apitypes.WeightsResponse
	for {
		h := bearer(e.Token)
		h["If-Match"] = `"1"`
		a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":12}}`, h)
		if a.Code == http.StatusOK {
			a.Decode(t, &res)
			break
		}
		if a.Code != http.StatusServiceUnavailable || time.Now().After(deadline.Add(15*time.Second)) {
			t.Fatalf("change after reconnect: %d %s", a.Code, a.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res.Version != 2 || res.String() != "redis-a=12 redis-b=70" {
		t.Errorf("after reconnect: version %d %s, want 2 redis-a=12 redis-b=70", res.Version, res.String())
	}
	// Both came back through their broker sessions, which say why the
	// first ended.
	for {
		control, heartbeats := e.Server.Brokers()
		if control.Sessions == 2 && heartbeats.Sessions == 2 {
			for _, st := range []broker.Status{control, heartbeats} {
				if st.State != broker.StateUp || !strings.Contains(st.Reason, "CONNECTION_FORCED") {
					t.Errorf("broker session %+v, want up again after the broker closed the first", st)
				}
			}
			break
		}
		if time.Now().After(deadline.Add(15 * time.Second)) {
			t.Fatalf("broker sessions: control log %+v, heartbeats %+v; want each on its second", control, heartbeats)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Heartbeats reach the new queue.
	for {
		e.Heartbeat(t, heartbeat.Message{Consumer: "after", Version: 2, Position: res.ChangePosition})
		var st apitypes.Status
		e.Read(t, "/api/v1/status").Decode(t, &st)
		if st.ConsumersAlive == 1 && st.Consumers[0].ID == "after" && st.Converged {
			break
		}
		if time.Now().After(deadline.Add(25 * time.Second)) {
			t.Fatalf("heartbeat after reconnect not seen: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
