package cli_test

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/services/admin/internal/cli"
	"github.com/connpipe/connpipe/services/admin/internal/operators"
)

// TestNamedOperatorsAndHistory: operators listed by name in
// ADMIN_TOKENS_FILE (token hashes only). Each change carries the name of
// the operator whose token made it, whatever the request says; a read
// operator may not write; editing the file revokes and adds operators
// without a restart; `admin history` and /api/v1/history list the changes
// in order with who, when, what and the version.
func TestNamedOperatorsAndHistory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "operators")
	writeFile := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile("alice:write:" + operators.HashToken("tok-alice") + "\nbob:read:" + operators.HashToken("tok-bob") + "\n")
	e := apptest.Start(t, func(c *app.Config) { c.TokensFile = file })
	start := time.Now()

	alice := cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: "tok-alice"}}
	if got := run(t, alice, "weights", "set", "redis-a=40", "redis-b=60"); got.code != 0 {
		t.Fatalf("alice sets weights: %d %s", got.code, got.stderr)
	}
	if got := run(t, cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: "tok-bob"}}, "weights", "set", "redis-a=1"); got.code != 1 || !strings.Contains(got.stderr, "bob may only read") {
		t.Fatalf("bob (read) sets weights: %d %s", got.code, got.stderr)
	}
	// A "by" in the body is no field of the request: refused, not trusted.
	a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":5},"by":"mallory"}`, map[string]string{"Authorization": "Bearer tok-alice"})
	if a.Code != http.StatusBadRequest {
		t.Fatalf("a body naming the operator: %d %s", a.Code, a.Body)
	}
	if got := run(t, cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}, "backends", "remove", "redis-b"); got.code != 0 {
		t.Fatalf("ADMIN_TOKEN removes redis-b: %d %s", got.code, got.stderr)
	}

	writeFile("carol:write:" + operators.HashToken("tok-carol") + "\n") // alice and bob revoked
	deadline := time.Now().Add(3*app.OperatorsPoll + 5*time.Second)
	for {
		got := run(t, cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: "tok-carol"}}, "weights", "set", "redis-a=50")
		if got.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol, added to the file, cannot write: %s", got.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := run(t, alice, "weights", "get"); got.code != 1 || !strings.Contains(got.stderr, "wrong token") {
		t.Fatalf("alice after her removal from the file: %d %s", got.code, got.stderr)
	}

	var h apitypes.History
	e.Read(t, "/api/v1/history?since=1m").Decode(t, &h)
	var who []string
	var versions []int64
	for _, en := range h.Entries {
		if en.Op == "seed" {
			continue
		}
		who = append(who, en.By)
		versions = append(versions, en.Version)
		if en.Time.Before(start.Add(-time.Second)) || en.Time.After(time.Now()) {
			t.Errorf("entry %+v: time outside the test", en)
		}
	}
	if strings.Join(who, ",") != "alice,admin,carol" || len(versions) != 3 || versions[0] != 1 || versions[2] != 3 {
		t.Fatalf("history by %v versions %v, want alice, admin, carol at 1, 2, 3: %+v", who, versions, h.Entries)
	}
	got := run(t, cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}, "history", "--since", "1m")
	want := regexp.MustCompile(`(?s)alice +v1 +\d+ +weights redis-a=40 redis-b=60\n.*admin +v2 +\d+ +remove backend redis-b\n.*carol +v3 +\d+ +weights redis-a=50\n`)
	if got.code != 0 || !want.MatchString(got.stdout) {
		t.Fatalf("admin history: %d\n%s%s", got.code, got.stdout, got.stderr)
	}
	t.Logf("admin history:\n%s", got.stdout)
}
