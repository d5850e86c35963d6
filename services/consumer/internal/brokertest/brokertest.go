// Package brokertest drops RabbitMQ connections from the broker's side, the
// way a broker restart does, for reconnect tests that may not restart the
// shared test broker.
package brokertest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/testenv"
)

// CloseConnections closes, through the management API, the connections of
// amqpURL's vhost whose client-given name starts with prefix, and returns
// how many it closed. The management API lists a connection only a few
// seconds after it opens: poll until the count is what you expect.
func CloseConnections(t testing.TB, amqpURL, prefix string) int {
	t.Helper()
	mgmt, err := url.Parse(testenv.Management(t))
	if err != nil {
		t.Fatal(err)
	}
	au, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(au.Path, "/")
	user := mgmt.User.Username()
	pass, _ := mgmt.User.Password()
	mgmt.User = nil
	do := func(method, path string) *http.Response {
		req, err := http.NewRequest(method, strings.TrimRight(mgmt.String(), "/")+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("management API: %v", err)
		}
		return resp
	}
	var conns []struct {
		Name             string         `json:"name"`
		ClientProperties map[string]any `json:"client_properties"`
	}
	resp := do(http.MethodGet, "/api/vhosts/"+url.PathEscape(vhost)+"/connections")
	err = json.NewDecoder(resp.Body).Decode(&conns)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("list connections of vhost %q: %v", vhost, err)
	}
	n := 0
	for _, c := range conns {
		if name, _ := c.ClientProperties["connection_name"].(string); strings.HasPrefix(name, prefix) {
			resp := do(http.MethodDelete, "/api/connections/"+url.PathEscape(c.Name))
			resp.Body.Close()
			if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
				t.Fatalf("close connection %q: %s", c.Name, resp.Status)
			}
			n++
		}
	}
	return n
}
