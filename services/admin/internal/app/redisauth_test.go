package app_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/redisconn/redisconntest"
)

// TestPasswordAndTLSBackends: admin reads backends that need an ACL
// user's password and TLS, and never shows the passwords.
func TestPasswordAndTLSBackends(t *testing.T) {
	const aclPass, tlsPass = "admin-acl-Pa55-4d1", "admin-tls-Pa55-c07"
	dir := t.TempDir()
	ca := redisconntest.WriteTLS(t, dir)
	acl := redisconntest.Start(t, dir, "acl", 10, "user default off", "user reader on >"+aclPass+" ~* &* +@all")
	tlsPort := redisconntest.Start(t, dir, "tls", 12, "requirepass "+tlsPass,
		"tls-cert-file "+filepath.Join(dir, "server.pem"), "tls-key-file "+filepath.Join(dir, "server.key"),
		"tls-ca-cert-file "+ca, "tls-auth-clients no")
	e := apptest.Start(t, func(c *app.Config) {
		c.Backends = fmt.Sprintf("redis-a=redis://reader:%s@127.0.0.1:%d/0,redis-b=rediss://:%s@127.0.0.1:%d", aclPass, acl, tlsPass, tlsPort)
		c.RedisCAFile = ca
	})
	for _, path := range []string{"/api/v1/status", "/api/v1/stats", "/api/v1/weights", "/api/v1/records?since=1m"} {
		a := e.Read(t, path)
		if a.Code != 200 || strings.Contains(string(a.Body), aclPass) || strings.Contains(string(a.Body), tlsPass) {
			t.Fatalf("%s: %d %s", path, a.Code, a.Body)
		}
	}
	var st api.Status
	e.Read(t, "/api/v1/status").Decode(t, &st)
	for _, b := range st.Backends {
		if !b.Reachable || b.State != redisconn.StateUp || b.UsedMemory <= 0 || !strings.Contains(b.Addr, ":xxxxx@127.0.0.1:") {
			t.Errorf("backend %+v: want reachable, up, with its memory and its password redacted", b)
		}
	}
}
