package web

import (
	"regexp"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/control"
)

// TestThePageHasNoListOfModes: the page offers the routing modes and hash
// keys that GET /api/v1/modes answers (control.Modes, control.HashKeys;
// package api tests that answer), so it must hold no copy of them: the
// selects start empty, and the script names no mode or key.
func TestThePageHasNoListOfModes(t *testing.T) {
	html, err := files.ReadFile("ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"mode", "hash-key"} {
		m := regexp.MustCompile(`(?s)<select id="` + id + `"[^>]*>(.*?)</select>`).FindSubmatch(html)
		if m == nil {
			t.Fatalf("index.html has no select #%s", id)
		}
		if strings.TrimSpace(string(m[1])) != "" {
			t.Errorf("index.html: select #%s lists its own options: %s", id, m[1])
		}
	}
	js, err := files.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `getJSON("api/v1/modes")`) {
		t.Error("app.js does not read api/v1/modes")
	}
	names := append(control.ModeNames(), control.HashKeyNames()...)
	for _, name := range names {
		for _, q := range []string{`"` + name + `"`, `'` + name + `'`, "`" + name + "`"} {
			if strings.Contains(string(js), q) {
				t.Errorf("app.js names %s itself: the list is the API's", q)
			}
		}
	}
}
