// Package web serves admin's operator page at / : one look at where
// records go (each Redis instance's state, weight, target and observed
// share, records/s and memory, with a chart of the last minutes), the
// consumers, the capture and the broker, and a form to change the weights.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary; it
// loads nothing from elsewhere (its Content-Security-Policy allows only
// admin's own origin), so it works offline. It has no back door: it polls
// the same public HTTP API the CLI uses (GET /api/v1/status and
// /api/v1/stats every second, with the read token typed at its top) and
// changes weights with PUT /api/v1/weights, sending the write token typed
// into the form and the version it shows as If-Match. Both tokens are kept
// in the tab's sessionStorage; the page itself needs none.
package web

import (
	"embed"
	"net/http"
	"strings"
)

//go:embed ui
var files embed.FS

// csp keeps the page to admin's own origin: no inline script, nothing from
// the network.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register adds the page (GET /) and its files (GET /ui/...) to mux.
func Register(mux *http.ServeMux) {
	static := http.FileServerFS(files) // /ui/app.js is ui/app.js in files
	mux.Handle("GET /ui/", headers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		static.ServeHTTP(w, r)
	})))
	mux.Handle("GET /{$}", headers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, files, "ui/index.html")
	})))
}

func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
