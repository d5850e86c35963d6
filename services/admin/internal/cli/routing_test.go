package cli_test

import (
	"strings"
	"testing"

	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/services/admin/internal/cli"
)

func TestBackendsAndMode(t *testing.T) {
	e := apptest.Start(t, nil)
	env := cli.Env{URL: e.URL, Token: e.Token}
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
		{[]string{"mode", "set", "hash", "--key", "port"}, 1, "bad routing mode"},
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
