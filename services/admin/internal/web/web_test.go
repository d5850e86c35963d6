package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestServesThePageAndItsFiles(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		path, contentType, contains string
		code                        int
	}{
		{"/", "text/html", `<script src="ui/app.js"`, 200},
		{"/ui/app.js", "javascript", "api/v1/status", 200},
		{"/ui/app.css", "text/css", "#chart", 200},
		{"/ui/favicon.svg", "image/svg+xml", "<svg", 200},
		{"/ui/", "", "", 404},
		{"/ui/missing.js", "", "", 404},
		{"/other", "", "", 404},
	}
	for _, tt := range tests {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s: %d, want %d", tt.path, resp.StatusCode, tt.code)
			continue
		}
		if tt.code != 200 {
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tt.contentType) {
			t.Errorf("%s: content type %q, want %q", tt.path, ct, tt.contentType)
		}
		if !strings.Contains(string(body), tt.contains) {
			t.Errorf("%s: body lacks %q", tt.path, tt.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", tt.path, csp)
		}
	}
}

// Nothing the page loads may come from another origin: it must work
// offline. Every src/href in the HTML and every fetch in the script is a
// relative path.
func TestNothingFromElsewhere(t *testing.T) {
	for _, name := range []string{"ui/index.html", "ui/app.js", "ui/app.css"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?i)(?:src|href)="([^"]*)"|fetch\("([^"]*)"|url\(([^)]*)\)|@import`).FindAllStringSubmatch(string(b), -1) {
			ref := m[1] + m[2] + m[3]
			if m[0] == "@import" || strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") {
				t.Errorf("%s loads %q: only relative paths to admin itself are allowed", name, m[0])
			}
		}
	}
}
