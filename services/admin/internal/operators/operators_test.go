package operators_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/operators"
)

func TestParse(t *testing.T) {
	ops, err := operators.Parse("alice:write:" + operators.HashToken("a") + ", bob:read:" + strings.ToUpper(operators.HashToken("b")) + " # the on-call\n\n# none\n")
	if err != nil || len(ops) != 2 || ops[0].Name != "alice" || ops[0].Role != operators.RoleWrite || ops[1].Role != operators.RoleRead {
		t.Fatalf("ops %+v err %v", ops, err)
	}
	for _, bad := range []string{
		"alice:write:tok-in-clear", "alice:admin:" + operators.HashToken("a"), "alice:write", "a b:read:" + operators.HashToken("a"),
		"alice:write:" + operators.HashToken("a") + ",alice:read:" + operators.HashToken("b"),
	} {
		if _, err := operators.Parse(bad); err == nil {
			t.Errorf("%q: no error", bad)
		} else if strings.Contains(err.Error(), "tok-in-clear") {
			t.Errorf("%q: the error quotes the token: %v", bad, err)
		}
	}
}

// TestFileReloaded: a token added to the file works and one removed stops
// working, without a restart; a file that no longer parses keeps the list.
func TestFileReloaded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "operators")
	write := func(s string) {
		t.Helper()
		// Whole, as documented: a new file renamed over the old one.
		if err := os.WriteFile(file+".new", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	write("alice:write:" + operators.HashToken("tok-a") + "\n")
	l, err := operators.New([]operators.Operator{operators.FromToken("admin", operators.RoleWrite, "tok-admin")}, file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Watch(ctx, 10*time.Millisecond)
	who := func(tok string) string {
		op, ok := l.Lookup(tok)
		if !ok {
			return ""
		}
		return op.Name + ":" + op.Role.String()
	}
	if who("tok-a") != "alice:write" || who("tok-admin") != "admin:write" || who("tok-c") != "" {
		t.Fatalf("before: %q %q %q", who("tok-a"), who("tok-admin"), who("tok-c"))
	}
	write("carol:read:" + operators.HashToken("tok-c") + "\n# alice revoked\n")
	eventually(t, func() bool { return who("tok-a") == "" && who("tok-c") == "carol:read" })
	if who("tok-admin") != "admin:write" {
		t.Errorf("ADMIN_TOKEN's operator lost on reload")
	}
	write("broken")
	time.Sleep(100 * time.Millisecond)
	if who("tok-c") != "carol:read" {
		t.Errorf("a broken file replaced the list in force")
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("not within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
