package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/services/admin/internal/cli"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/redisconn/redisconntest"
)

type out struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, env cli.Env, args ...string) out {
	t.Helper()
	var o, e bytes.Buffer
	code := cli.Run(context.Background(), env, args, &o, &e)
	return out{code, o.String(), e.String()}
}

func lines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

func TestWeights(t *testing.T) {
	e := apptest.Start(t, nil)
	env := cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}
	a, b := e.Backends[0].Addr, e.Backends[1].Addr

	got := run(t, env, "weights", "get")
	if got.code != 0 || !strings.HasPrefix(got.stdout, "version 0 (log position ") ||
		!strings.Contains(got.stdout, "\nredis-a=30 redis-b=70\n") ||
		!regexp.MustCompile(`(?m)^  redis-a +`+regexp.QuoteMeta(a)+` +weight 30 +30\.0%$`).MatchString(got.stdout) ||
		!regexp.MustCompile(`(?m)^  redis-b +`+regexp.QuoteMeta(b)+` +weight 70 +70\.0%$`).MatchString(got.stdout) {
		t.Fatalf("weights get: %d\n%s%s", got.code, got.stdout, got.stderr)
	}

	got = run(t, env, "weights", "set", "redis-a=50", "redis-b=50", "--expect-version", "0")
	if got.code != 0 || !strings.Contains(got.stdout, "version 1 ") || !strings.Contains(got.stdout, "\nredis-a=50 redis-b=50\n") ||
		!strings.Contains(got.stdout, "no live consumer") {
		t.Fatalf("weights set: %d\n%s%s", got.code, got.stdout, got.stderr)
	}
	if g := run(t, env, "weights", "get"); !strings.HasPrefix(g.stdout, "version 1 ") || !strings.Contains(g.stdout, "redis-a=50 redis-b=50") {
		t.Fatalf("weights get after set:\n%s", g.stdout)
	}

	refusals := []struct {
		name string
		env  cli.Env
		args []string
		code int
		want string
	}{
		{"stale", env, []string{"weights", "set", "--expect-version", "0", "redis-a=1"}, cli.ExitFailed,
			"admin weights set: refused, stale version: expected version 0, table is at 1"},
		{"unknown backend", env, []string{"weights", "set", "redis-c=1"}, cli.ExitFailed,
			`admin weights set: refused, weights: unknown backend "redis-c" (known: redis-a, redis-b)`},
		{"no capacity", env, []string{"weights", "set", "redis-a=0", "redis-b=0"}, cli.ExitFailed, "change leaves every backend at weight 0"},
		{"not an integer", env, []string{"weights", "set", "redis-a=abc"}, cli.ExitUsage, `admin weights set: "redis-a=abc": weight must be an integer 0..256`},
		{"out of range", env, []string{"weights", "set", "redis-a=300"}, cli.ExitUsage, `admin weights set: "redis-a=300": weight must be an integer 0..256`},
		{"no equals", env, []string{"weights", "set", "redis-a"}, cli.ExitUsage, `"redis-a": want NAME=WEIGHT`},
		{"twice", env, []string{"weights", "set", "redis-a=1", "redis-a=2"}, cli.ExitUsage, `backend "redis-a" given twice`},
		{"bad flag", env, []string{"weights", "set", "redis-a=1", "--wait", "soon"}, cli.ExitUsage, `invalid value "soon" for flag -wait`},
		{"no token", cli.Env{URL: e.URL}, []string{"weights", "set", "redis-a=1"}, cli.ExitFailed, "401 Unauthorized"},
		{"wrong token", cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: "nope"}}, []string{"weights", "set", "redis-a=1"}, cli.ExitFailed, "403 Forbidden: wrong token (set ADMIN_TOKEN)"},
		{"nothing serving", cli.Env{URL: "http://127.0.0.1:1"}, []string{"weights", "get"}, cli.ExitFailed, "admin API at http://127.0.0.1:1"},
		{"unknown command", env, []string{"wieghts"}, cli.ExitUsage, `unknown command "wieghts"`},
	}
	for _, tt := range refusals {
		got := run(t, tt.env, tt.args...)
		if got.code != tt.code || !strings.Contains(got.stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d with %q", tt.name, got.code, got.stderr, tt.code, tt.want)
		}
	}
	if g := run(t, env, "weights", "get"); !strings.HasPrefix(g.stdout, "version 1 ") {
		t.Errorf("refusals changed the table:\n%s", g.stdout)
	}
}

func TestWeightsSetWait(t *testing.T) {
	e := apptest.Start(t, nil)
	env := cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}
	e.Heartbeat(t, heartbeat.Message{Consumer: "slowpoke", Position: 0})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(run(t, env, "status").stdout, "slowpoke") {
		if time.Now().After(deadline) {
			t.Fatal("heartbeat not in status within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := run(t, env, "weights", "set", "redis-b=1", "--wait", "300ms")
	if got.code != cli.ExitNotConverged || !strings.Contains(got.stderr, "not converged after 300ms: 1 of 1 live consumers have not applied it: slowpoke") ||
		!strings.Contains(got.stdout, "redis-a=30 redis-b=1") {
		t.Fatalf("set --wait with a laggard: exit %d\n%s%s", got.code, got.stdout, got.stderr)
	}

	done := make(chan out, 1)
	go func() { done <- run(t, env, "weights", "set", "redis-b=2", "--wait", "20s") }()
	// Answer as the consumer would once it applied version 2.
	var pos int64 = -1
	for pos < 0 {
		g := run(t, env, "weights", "get")
		if strings.HasPrefix(g.stdout, "version 2 ") {
			if _, err := fmt.Sscanf(g.stdout, "version 2 (log position %d)", &pos); err != nil {
				t.Fatalf("weights get: %v\n%s", err, g.stdout)
			}
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("change not applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.Heartbeat(t, heartbeat.Message{Consumer: "slowpoke", Version: 2, Position: pos})
	select {
	case got := <-done:
		if got.code != 0 || !strings.Contains(got.stdout, "converged: all 1 live consumers applied it") {
			t.Fatalf("set --wait: exit %d\n%s%s", got.code, got.stdout, got.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("set --wait did not return after the consumer applied it")
	}
}

func TestStatus(t *testing.T) {
	e := apptest.Start(t, nil)
	env := cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}
	e.Heartbeat(t, heartbeat.Message{Consumer: "c-1", Host: "box1", Version: 0, Position: 0, Ready: true, Records: 1234, Acked: 56})
	var got out
	deadline := time.Now().Add(10 * time.Second)
	// Admin seeds the empty log just after reading it: wait for the seed
	// (position 0) as well as the heartbeat.
	for got = run(t, env, "status"); !strings.Contains(got.stdout, "c-1") || strings.Contains(got.stdout, "log position -1"); got = run(t, env, "status") {
		if time.Now().After(deadline) {
			t.Fatalf("consumer not in status:\n%s", got.stdout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ls := lines(got.stdout)
	checks := []*regexp.Regexp{
		regexp.MustCompile(`^table   version 0 \(log position \d+\)  redis-a=30 redis-b=70$`),
		regexp.MustCompile(`^control log read, rabbitmq connected$`),
		regexp.MustCompile(`^converged yes \(1 live consumer, timeout 2s\)$`),
		regexp.MustCompile(`^$`),
		regexp.MustCompile(`^CONSUMER +HOST +ALIVE +READY +VERSION +POSITION +CONVERGED +RECORDS +ACKED +LAST HEARTBEAT$`),
		regexp.MustCompile(`^c-1 +box1 +yes +yes +0 +0 +yes +1234 +56 +\d+\.\ds ago$`),
		regexp.MustCompile(`^$`),
		regexp.MustCompile(`^BACKEND +ADDRESS +WEIGHT +SHARE +REACHABLE +USED MEMORY$`),
		regexp.MustCompile(`^redis-a +` + regexp.QuoteMeta(e.Backends[0].Addr) + ` +30 +30\.0% +yes +[\d.]+ [KMG]iB$`),
		regexp.MustCompile(`^redis-b +` + regexp.QuoteMeta(e.Backends[1].Addr) + ` +70 +70\.0% +yes +[\d.]+ [KMG]iB$`),
	}
	if got.code != 0 || len(ls) != len(checks) {
		t.Fatalf("status: exit %d, %d lines, want %d:\n%s", got.code, len(ls), len(checks), got.stdout)
	}
	for i, re := range checks {
		if !re.MatchString(ls[i]) {
			t.Errorf("status line %d %q does not match %s", i, ls[i], re)
		}
	}
}

func TestRecords(t *testing.T) {
	e := apptest.Start(t, nil)
	env := cli.Env{URL: e.URL, Auth: apitypes.Auth{ReadToken: e.ReadToken}}
	now := time.Now()
	rec := func(ago time.Duration, src, dst string, sport uint16) record.Record {
		return record.Record{TS: now.Add(-ago).UnixNano(), Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: 8080, Flags: record.FlagSYN | record.FlagACK, IPLen: 52}
	}
	a1 := rec(40*time.Second, "10.1.1.1", "10.0.0.1", 1001)
	a2 := rec(30*time.Second, "10.2.2.2", "10.0.0.1", 1002)
	b1 := rec(20*time.Second, "10.1.1.1", "10.0.0.2", 2001)
	b2 := rec(5*time.Second, "10.1.1.1", "10.0.0.1", 2002)
	old := rec(2*time.Minute, "10.1.1.1", "10.0.0.1", 2003)
	e.WriteRecords(t, 0, a1, a2)
	e.WriteRecords(t, 1, b1, b2, old)

	tests := []struct {
		args    []string
		want    []string
		summary string
	}{
		{[]string{"records", "--since", "1m", "--src", "10.1.1.1"},
			[]string{"redis-a\t" + a1.String(), "redis-b\t" + b1.String(), "redis-b\t" + b2.String()}, "3 records (redis-a=1 redis-b=2)"},
		{[]string{"records", "--since", "1m"},
			[]string{"redis-a\t" + a1.String(), "redis-a\t" + a2.String(), "redis-b\t" + b1.String(), "redis-b\t" + b2.String()}, "4 records (redis-a=2 redis-b=2)"},
		{[]string{"records", "--since", "1m", "--dst", "10.0.0.1", "--src", "10.1.1.1"},
			[]string{"redis-a\t" + a1.String(), "redis-b\t" + b2.String()}, "2 records (redis-a=1 redis-b=1)"},
		{[]string{"records", "--since", "3m", "--until", "90s"},
			[]string{"redis-b\t" + old.String()}, "1 record (redis-a=0 redis-b=1)"},
		{[]string{"records", "--since", "1m", "--limit", "1"},
			[]string{"redis-a\t" + a1.String()}, "truncated at the limit"},
		{[]string{"records", "--src", "192.0.2.1"}, nil, "0 records (redis-a=0 redis-b=0)"},
		{[]string{"records", "--since", "3m", "--count"}, []string{"redis-a\t2", "redis-b\t3", "total\t5"}, "counted from the per-second counters"},
		{[]string{"records", "--since", "1m", "--src", "10.1.1.1", "--count"}, []string{"redis-a\t1", "redis-b\t2", "total\t3"}, "counted by reading the records"},
	}
	for _, tt := range tests {
		got := run(t, env, tt.args...)
		var gotLines []string
		if got.stdout != "" {
			gotLines = lines(got.stdout)
		}
		if got.code != 0 || strings.Join(gotLines, "\n") != strings.Join(tt.want, "\n") || !strings.Contains(got.stderr, tt.summary) {
			t.Errorf("%v: exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s(want %q)", tt.args, got.code, got.stdout, strings.Join(tt.want, "\n"), got.stderr, tt.summary)
		}
	}

	got := run(t, env, "records", "--since", "1m", "--src", "10.2.2.2", "--json")
	var item struct {
		Backend string `json:"backend"`
		record.JSON
	}
	if got.code != 0 || len(lines(got.stdout)) != 1 || json.Unmarshal([]byte(got.stdout), &item) != nil {
		t.Fatalf("--json: exit %d\n%s%s", got.code, got.stdout, got.stderr)
	}
	if r, err := item.Record(); err != nil || item.Backend != "redis-a" || r != a2 {
		t.Errorf("--json gave %s %+v (%v), want redis-a %+v", item.Backend, r, err, a2)
	}

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"records", "--src", "10.1.1"}, cli.ExitFailed, `src "10.1.1" is not an IP address`},
		{[]string{"records", "--since", "yesterday"}, cli.ExitFailed, `since "yesterday"`},
		{[]string{"records", "--limit", "-3"}, cli.ExitUsage, "--limit -3"},
		{[]string{"records", "extra"}, cli.ExitUsage, `unexpected argument "extra"`},
	} {
		got := run(t, env, tt.args...)
		if got.code != tt.code || !strings.Contains(got.stderr, tt.want) {
			t.Errorf("%v: exit %d stderr %q, want exit %d with %q", tt.args, got.code, got.stderr, tt.code, tt.want)
		}
	}
}

func TestParseWeights(t *testing.T) {
	tests := []struct {
		args []string
		want map[string]int
		err  string
	}{
		{[]string{"redis-a=30", "redis-b=70"}, map[string]int{"redis-a": 30, "redis-b": 70}, ""},
		{[]string{"redis-a=0"}, map[string]int{"redis-a": 0}, ""},
		{[]string{"redis-a=256"}, map[string]int{"redis-a": 256}, ""},
		{[]string{"redis-a=257"}, nil, `"redis-a=257": weight must be an integer 0..256`},
		{[]string{"redis-a=-1"}, nil, `"redis-a=-1": weight must be an integer 0..256`},
		{[]string{"redis-a=1.5"}, nil, `"redis-a=1.5": weight must be an integer 0..256`},
		{[]string{"=5"}, nil, `"=5": want NAME=WEIGHT`},
		{nil, nil, "want NAME=WEIGHT arguments"},
	}
	for _, tt := range tests {
		got, err := cli.ParseWeights(tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseWeights(%q) err = %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ParseWeights(%q) = %v, %v; want %v", tt.args, got, err, tt.want)
		}
	}
}

// TestReadToken: reads send ADMIN_READ_TOKEN, or ADMIN_TOKEN without one;
// reads with neither are refused.
func TestReadToken(t *testing.T) {
	e := apptest.Start(t, nil)
	for _, tt := range []struct {
		name string
		env  cli.Env
		code int
		want string
	}{
		{"read token", cli.Env{URL: e.URL, Auth: apitypes.Auth{ReadToken: e.ReadToken}}, cli.ExitOK, "redis-a"},
		{"write token", cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token}}, cli.ExitOK, "redis-a"},
		{"no token", cli.Env{URL: e.URL}, cli.ExitFailed, "401 Unauthorized"},
		{"wrong read token", cli.Env{URL: e.URL, Auth: apitypes.Auth{Token: e.Token, ReadToken: "nope"}}, cli.ExitFailed, "403 Forbidden"},
	} {
		got := run(t, tt.env, "status")
		if got.code != tt.code || !strings.Contains(got.stdout+got.stderr, tt.want) {
			t.Errorf("%s: admin status: %d\n%s%s\nwant %d with %q", tt.name, got.code, got.stdout, got.stderr, tt.code, tt.want)
		}
	}
	if got := run(t, cli.Env{URL: e.URL, Auth: apitypes.Auth{ReadToken: e.ReadToken}}, "weights", "set", "redis-a=1"); got.code != cli.ExitFailed {
		t.Errorf("weights set with only the read token: %d %s", got.code, got.stderr)
	}
}

// TestHTTPSAdmin: against admin serving https (TLS_CERT, TLS_KEY), the CLI
// trusts ADMIN_CA_FILE and refuses a certificate it cannot verify.
func TestHTTPSAdmin(t *testing.T) {
	dir := t.TempDir()
	ca := redisconntest.WriteTLS(t, dir) // a CA and a certificate for 127.0.0.1
	e := apptest.Start(t, func(c *app.Config) {
		c.TLSCert, c.TLSKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	})
	if got := run(t, cli.Env{URL: e.URL, CAFile: ca, Auth: apitypes.Auth{Token: e.Token}}, "weights", "set", "redis-a=40"); got.code != cli.ExitOK {
		t.Fatalf("weights set over https with ADMIN_CA_FILE: %d %s%s", got.code, got.stdout, got.stderr)
	}
	if got := run(t, cli.Env{URL: e.URL, CAFile: ca, Auth: apitypes.Auth{ReadToken: e.ReadToken}}, "status"); got.code != cli.ExitOK || !strings.Contains(got.stdout, "redis-a=40") {
		t.Fatalf("status over https: %d %s%s", got.code, got.stdout, got.stderr)
	}
	if got := run(t, cli.Env{URL: e.URL, Auth: apitypes.Auth{ReadToken: e.ReadToken}}, "status"); got.code != cli.ExitFailed || !strings.Contains(got.stderr, "certificate") {
		t.Fatalf("status over https without the CA: %d %s%s", got.code, got.stdout, got.stderr)
	}
}

// TestModeFollowsTheTable: the CLI's help lists the rows of control.Modes
// and control.HashKeys, and "mode set" takes every one of them (the
// request then fails to reach a server that is not there: status 1, not
// a usage error) and refuses any other before sending anything.
func TestModeFollowsTheTable(t *testing.T) {
	line := "admin mode set " + strings.Join(control.ModeNames(), "|") + " [--key " + strings.Join(control.HashKeyNames(), "|") + "]"
	if !strings.Contains(cli.Usage, line) {
		t.Errorf("usage lacks %q:\n%s", line, cli.Usage)
	}
	env := cli.Env{URL: "http://127.0.0.1:1", Auth: apitypes.Auth{Token: "t"}}
	for _, m := range control.ModeNames() {
		for _, k := range control.HashKeyNames() {
			var out, errw strings.Builder
			if code := cli.Run(context.Background(), env, []string{"mode", "set", m, "--key", k}, &out, &errw); code != cli.ExitFailed {
				t.Errorf("mode set %s --key %s: %d %s, want %d (sent, no server)", m, k, code, errw.String(), cli.ExitFailed)
			}
		}
	}
	for _, args := range [][]string{{"mode", "set", "random"}, {"mode", "set", "--key", "port"}} {
		var out, errw strings.Builder
		if code := cli.Run(context.Background(), env, args, &out, &errw); code != cli.ExitUsage || !strings.Contains(errw.String(), "bad routing mode") {
			t.Errorf("%s: %d %s, want %d", strings.Join(args, " "), code, errw.String(), cli.ExitUsage)
		}
	}
}
