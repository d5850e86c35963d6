package cli_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/services/admin/internal/cli"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/redis/go-redis/v9"
)

func TestBackendsAndMode(t *testing.T) {
	e := apptest.Start(t, func(c *app.Config) { c.BackendAllow = "127.0.0.1:*" })
	env := cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}
	steps := []struct {
		args []string
		code int
		want string // in stdout (code 0) or stderr
	}{
		{[]string{"backends", "add", "redis-c", "127.0.0.1:6381", "--weight", "50"}, 0, "redis-a=30 redis-b=70 redis-c=50\nmode weighted\n"},
		{[]string{"backends", "add", "redis-c", "127.0.0.1:6382"}, 1, "refused, add backend: backend already exists"},
		{[]string{"backends", "add", "redis-d", "nowhere"}, 1, "want host:port"},
		{[]string{"backends", "add", "redis-d"}, 2, "want NAME HOST:PORT"},
		{[]string{"backends", "add", "redis-d", "h:1", "--weight", "300"}, 2, "--weight 300"},
		{[]string{"mode", "set", "hash", "--key", "pair", "--sticky", "--expect-version", "1"}, 0, "version 2 "},
		{[]string{"mode", "set", "--sticky=false"}, 0, "mode hash on pair\n"},
		{[]string{"mode", "set", "hash", "--key", "port"}, 2, `bad routing mode: hash_key "port" (want src, dst, pair or flow)`},
		{[]string{"mode", "set", "roundrobin"}, 2, `bad routing mode: mode "roundrobin" (want weighted or hash)`},
		{[]string{"mode", "set"}, 2, "want weighted or hash"},
		{[]string{"mode", "set", "weighted", "--expect-version", "0"}, 1, "stale version"},
		{[]string{"backends", "remove", "redis-c", "--wait", "1s"}, 0, "redis-a=30 redis-b=70\nmode hash on pair\n"},
		{[]string{"backends", "remove", "redis-c"}, 1, "unknown backend"},
		{[]string{"backends", "drop", "redis-c"}, 2, "want add or remove"},
	}
	for _, s := range steps {
		got := run(t, env, s.args...)
		text := got.stdout
		if s.code != 0 {
			text = got.stderr
		}
		if got.code != s.code || !strings.Contains(text, s.want) {
			t.Fatalf("admin %s: %d\n%s%s\nwant %d with %q", strings.Join(s.args, " "), got.code, got.stdout, got.stderr, s.code, s.want)
		}
	}
	if got := run(t, cli.Env{URL: e.URL}, "backends", "remove", "redis-b"); got.code != 1 || !strings.Contains(got.stderr, "set ADMIN_TOKEN") {
		t.Fatalf("without a token: %d %s", got.code, got.stderr)
	}
}

// In hash mode a records query that names the key asks only the instance
// that owns it: the ring's choice, or the stick table's entry when sticky.
func TestRecordsAskTheOwner(t *testing.T) {
	e := apptest.Start(t, nil)
	env := cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}
	now := time.Now().UnixNano()
	src := netip.MustParseAddr("10.3.3.3")
	tbl, err := control.NewTable(e.Backends)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := routing.NewRing(tbl)
	if err != nil {
		t.Fatal(err)
	}
	r0 := record.Record{TS: now, Src: src, Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 1, DstPort: 80}
	owner := ring.Pick(routing.HashSrc(&r0))
	other := 1 - owner
	onOwner, onOther := r0, r0
	onOther.SrcPort = 2
	e.WriteRecords(t, owner, onOwner)
	e.WriteRecords(t, other, onOther) // as if stored while the owner was down

	if got := run(t, env, "records", "--src", src.String()); got.code != 0 || !strings.Contains(got.stderr, "2 records") {
		t.Fatalf("weighted mode asks every instance: %d %s%s", got.code, got.stdout, got.stderr)
	}
	if got := run(t, env, "mode", "set", "hash", "--key", "src"); got.code != 0 {
		t.Fatalf("mode set: %s", got.stderr)
	}
	if got := run(t, env, "records", "--src", src.String()); got.code != 0 || !strings.Contains(got.stderr, "1 record (") || !strings.Contains(got.stderr, "asked only") {
		t.Fatalf("records in hash mode: %d %s%s", got.code, got.stdout, got.stderr)
	}
	if got := run(t, env, "records", "--src", src.String(), "--all"); got.code != 0 || !strings.Contains(got.stderr, "2 records") {
		t.Fatalf("records --all: %d %s%s", got.code, got.stdout, got.stderr)
	}
	if got := run(t, env, "status"); got.code != 0 || !strings.Contains(got.stdout, "redis-a=30 redis-b=70  (mode hash on src)\n") {
		t.Fatalf("status in hash mode: %d\n%s%s", got.code, got.stdout, got.stderr)
	}
	var res apitypes.RecordsResponse
	getJSON(t, e.ReadToken, e.URL+"/api/v1/records?src="+src.String(), &res)
	if res.Owner != e.Backends[owner].Name || len(res.Records) != 1 || res.Records[0].Backend != e.Backends[owner].Name {
		t.Fatalf("hash mode: owner %q, %d records %+v; want only %s's", res.Owner, len(res.Records), res.Records, e.Backends[owner].Name)
	}
	if _, asked := res.CountByBackend[e.Backends[other].Name]; asked {
		t.Fatalf("asked %s too: %v", e.Backends[other].Name, res.CountByBackend)
	}
	getJSON(t, e.ReadToken, e.URL+"/api/v1/records?all=true&src="+src.String(), &res)
	if res.Owner != "" || len(res.Records) != 2 {
		t.Fatalf("all=true: owner %q, %d records", res.Owner, len(res.Records))
	}
	getJSON(t, e.ReadToken, e.URL+"/api/v1/records?dst=10.0.0.1", &res) // no key in the query
	if res.Owner != "" || len(res.Records) != 2 {
		t.Fatalf("without the key: owner %q, %d records", res.Owner, len(res.Records))
	}

	// Sticky: the stick table's entry decides, not the ring.
	if got := run(t, env, "mode", "set", "--sticky"); got.code != 0 {
		t.Fatalf("mode set --sticky: %s", got.stderr)
	}
	home := redis.NewClient(&redis.Options{Addr: e.Backends[0].Addr})
	defer home.Close()
	key := e.Layout.StickKey(control.KeySrc.String(), routing.HashSrc(&r0))
	if err := home.Set(context.Background(), key, e.Backends[other].Name, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	defer home.Del(context.Background(), key)
	getJSON(t, e.ReadToken, e.URL+"/api/v1/records?src="+src.String(), &res)
	if res.Owner != e.Backends[other].Name || len(res.Records) != 1 || res.Records[0].SrcPort == nil || *res.Records[0].SrcPort != 2 {
		t.Fatalf("sticky: owner %q, records %+v; want the stick entry's %s", res.Owner, res.Records, e.Backends[other].Name)
	}
}

func getJSON(t *testing.T, readToken, url string, out *apitypes.RecordsResponse) {
	t.Helper()
	*out = apitypes.RecordsResponse{}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}
