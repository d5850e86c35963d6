package api

// Checks in front of every route of the API listener, against a browser
// page on another site (DNS rebinding, cross-site requests) rather than a
// client that holds no token:
//
//   - Host, when sent, must name this server (AllowedHosts), or the answer is 421
//     Misdirected Request: a page of attacker.example whose name was
//     rebound to 127.0.0.1 sends Host: attacker.example, and reads nothing.
//   - A write (any method but GET, HEAD and OPTIONS) that carries an Origin
//     must come from this server's own origin (403), and a POST or PUT must
//     be application/json (415). A browser sends a cross-site form or
//     text/plain POST without asking first; application/json needs a CORS
//     preflight that this server never grants.

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Guard checks Host, and Origin and Content-Type on writes.
type Guard struct {
	hosts map[string]bool
	tls   bool
}

// NewGuard allows the host names in hosts (names or IP addresses, with or
// without a port; the port is not checked). tls is whether the listener
// serves https, for the same-origin check.
func NewGuard(hosts []string, tls bool) *Guard {
	g := &Guard{hosts: map[string]bool{}, tls: tls}
	for _, h := range hosts {
		if h = hostOnly(strings.TrimSpace(h)); h != "" {
			g.hosts[h] = true
		}
	}
	return g
}

// DefaultHosts are the names a client on this machine uses, plus the host
// of the listen address (when it is a name or a specific address).
func DefaultHosts(listen string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

// hostOnly lower-cases a Host value and strips its port and the brackets
// of an IPv6 address.
func hostOnly(h string) string {
	h = strings.ToLower(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.Trim(h, "[]"), ".")
}

// Wrap checks every request before h sees it.
func (g *Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No Host at all (HTTP/1.0, as health checks send) cannot come
		// from a browser, which always names the host it thinks it talks to.
		if r.Host != "" && !g.hosts[hostOnly(r.Host)] {
			fail(w, http.StatusMisdirectedRequest, "host %q is not served here: add it to ADMIN_ALLOWED_HOSTS", r.Host)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			h.ServeHTTP(w, r)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !g.sameOrigin(o, r.Host) {
			fail(w, http.StatusForbidden, "origin %q may not write here: only pages served by admin itself may", o)
			return
		}
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				fail(w, http.StatusUnsupportedMediaType, "Content-Type %q: a write must be application/json", r.Header.Get("Content-Type"))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether origin is this server's own: the scheme it
// serves and the Host the request was sent to.
func (g *Guard) sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" && u.Path != "/" {
		return false
	}
	scheme := "http"
	if g.tls {
		scheme = "https"
	}
	return strings.EqualFold(u.Scheme, scheme) && strings.EqualFold(u.Host, host)
}
