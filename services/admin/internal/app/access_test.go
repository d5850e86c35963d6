package app_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
	"github.com/connpipe/connpipe/services/admin/internal/readback"
)

// Each test below replays an attack on the admin API, as one on the same
// network or a page in the operator's browser would make it, and checks
// that it is refused and changes nothing.

// TestReadsNeedAToken: records, status, stats and weights answer 401
// without a token and 403 with a wrong one; the read token and the write
// token both read; the read token cannot write.
func TestReadsNeedAToken(t *testing.T) {
	e := apptest.Start(t, nil)
	for _, path := range []string{"/api/v1/records?since=1m", "/api/v1/status", "/api/v1/stats", "/api/v1/weights"} {
		for _, tt := range []struct {
			name   string
			header map[string]string
			code   int
		}{
			{"no token", nil, http.StatusUnauthorized},
			{"wrong token", bearer("nope"), http.StatusForbidden},
			{"read token", bearer(e.ReadToken), http.StatusOK},
			{"write token", bearer(e.Token), http.StatusOK},
		} {
			a := apptest.Call(t, http.MethodGet, e.URL+path, "", tt.header)
			if a.Code != tt.code {
				t.Errorf("GET %s, %s: %d %s, want %d", path, tt.name, a.Code, a.Body, tt.code)
			}
			if tt.code != http.StatusOK && strings.Contains(string(a.Body), "redis-a") {
				t.Errorf("GET %s, %s: the refusal shows the table: %s", path, tt.name, a.Body)
			}
		}
	}
	a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":50}}`, bearer(e.ReadToken))
	if a.Code != http.StatusForbidden {
		t.Errorf("write with the read token: %d %s, want 403", a.Code, a.Body)
	}
	if tb, _ := getTable(t, e); tb.Version != 0 {
		t.Errorf("write with the read token changed the table to version %d", tb.Version)
	}
	// The page itself needs no token (it asks for one).
	if a := apptest.Call(t, http.MethodGet, e.URL+"/", "", nil); a.Code != http.StatusOK {
		t.Errorf("GET / without a token: %d", a.Code)
	}
}

// TestWrongHostRefused: a DNS-rebinding page sends its own name as Host;
// it reads nothing (421), even with a token the browser somehow holds.
func TestWrongHostRefused(t *testing.T) {
	e := apptest.Start(t, func(c *app.Config) { c.AllowedHosts = "admin.example.internal, 127.0.0.1" })
	for _, tt := range []struct {
		host string
		code int
	}{
		{"rebind.attacker.example", http.StatusMisdirectedRequest},
		{"rebind.attacker.example:" + port(e.Server.Addr()), http.StatusMisdirectedRequest},
		{"localhost", http.StatusMisdirectedRequest}, // not in this server's list
		{"admin.example.internal:8443", http.StatusOK},
		{"ADMIN.example.internal.", http.StatusOK},
		{e.Server.Addr(), http.StatusOK},
	} {
		for _, path := range []string{"/api/v1/status", "/"} {
			req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			req.Header.Set("Authorization", "Bearer "+e.ReadToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("GET %s, Host %s: %d %s, want %d", path, tt.host, resp.StatusCode, body, tt.code)
			}
		}
	}
	// A health check over HTTP/1.0 sends no Host: no browser does that.
	c, err := net.Dial("tcp", e.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /healthz HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz HTTP/1.0 without Host: %v %v", resp, err)
	}
	// The default list: this machine's names and the listen address.
	d := apptest.Start(t, nil)
	for _, host := range []string{"localhost", "127.0.0.1", "[::1]:8080", d.Server.Addr()} {
		req, _ := http.NewRequest(http.MethodGet, d.URL+"/api/v1/status", nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+d.ReadToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("default hosts: Host %s: %d, want 200", host, resp.StatusCode)
		}
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestCrossSiteWritesRefused: a page of another site can make the
// operator's browser POST a form or text/plain, and send an Origin; such
// writes are refused even with the token, as they are without one under
// ADMIN_INSECURE.
func TestCrossSiteWritesRefused(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		t.Run(fmt.Sprintf("insecure=%v", insecure), func(t *testing.T) {
			e := apptest.Start(t, func(c *app.Config) {
				if insecure {
					c.Token, c.ReadToken, c.Insecure = "", "", true
				}
			})
			auth := func(h map[string]string) map[string]string {
				if !insecure {
					h["Authorization"] = "Bearer " + e.Token
				}
				return h
			}
			body := `{"weights":{"redis-a":50}}`
			for _, tt := range []struct {
				name, method, path, body string
				header                   map[string]string
				code                     int
			}{
				{"cross-origin json", http.MethodPut, "/api/v1/weights", body,
					map[string]string{"Origin": "http://attacker.example"}, http.StatusForbidden},
				{"cross-origin, same host other port", http.MethodPut, "/api/v1/weights", body,
					map[string]string{"Origin": "http://127.0.0.1:1"}, http.StatusForbidden},
				{"opaque origin", http.MethodPut, "/api/v1/weights", body,
					map[string]string{"Origin": "null"}, http.StatusForbidden},
				{"cross-origin delete", http.MethodDelete, "/api/v1/backends/redis-a", "",
					map[string]string{"Origin": "http://attacker.example"}, http.StatusForbidden},
				{"text/plain", http.MethodPut, "/api/v1/weights", body,
					map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
				{"text/plain cross-origin post", http.MethodPost, "/api/v1/backends", `{"name":"evil","addr":"127.0.0.1:1"}`,
					map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://attacker.example"}, http.StatusForbidden},
				{"form post", http.MethodPost, "/api/v1/backends", `{"name":"evil","addr":"127.0.0.1:1"}`,
					map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
				{"no content type", http.MethodPut, "/api/v1/weights", body,
					map[string]string{"Content-Type": ""}, http.StatusUnsupportedMediaType},
			} {
				a := apptest.Call(t, tt.method, e.URL+tt.path, tt.body, auth(tt.header))
				if a.Code != tt.code {
					t.Errorf("%s: %d %s, want %d", tt.name, a.Code, a.Body, tt.code)
				}
			}
			if tb, _ := getTable(t, e); tb.Version != 0 || tb.String() != "redis-a=30 redis-b=70" {
				t.Fatalf("after refused writes: version %d %s", tb.Version, tb.String())
			}
			// The page's own origin writes.
			a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights", body, auth(map[string]string{"Origin": e.URL}))
			if a.Code != http.StatusOK {
				t.Fatalf("same-origin write: %d %s", a.Code, a.Body)
			}
		})
	}
}

// TestLimitCapped: a limit over the cap is refused before anything is
// read, naming the cap.
func TestLimitCapped(t *testing.T) {
	e := apptest.Start(t, nil)
	for _, limit := range []int{readback.MaxLimit + 1, 1_000_000} {
		a := e.Read(t, fmt.Sprintf("/api/v1/records?since=1m&limit=%d", limit))
		if a.Code != http.StatusBadRequest || !strings.Contains(string(a.Body), fmt.Sprint(readback.MaxLimit)) {
			t.Errorf("limit %d: %d %s, want 400 naming the cap %d", limit, a.Code, a.Body, readback.MaxLimit)
		}
	}
	if a := e.Read(t, fmt.Sprintf("/api/v1/records?since=1m&limit=%d", readback.MaxLimit)); a.Code != http.StatusOK {
		t.Errorf("limit at the cap: %d %s", a.Code, a.Body)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends nothing
// more is closed after HTTP_IDLE_TIMEOUT, not served for ever.
func TestIdleConnectionClosed(t *testing.T) {
	idle := 400 * time.Millisecond
	e := apptest.Start(t, func(c *app.Config) { c.IdleTimeout = idle })
	c, err := net.Dial("tcp", e.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /api/v1/status HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", e.Server.Addr(), e.ReadToken)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("status: %s close=%v, want 200 kept alive", resp.Status, resp.Close)
	}
	served := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(20 * idle))
	_, err = br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("idle connection still open %s after the answer (HTTP_IDLE_TIMEOUT %s)", time.Since(served), idle)
	}
	if err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
}

// TestTLS: with TLS_CERT and TLS_KEY admin serves https only.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	pool := writeCert(t, dir)
	e := apptest.Start(t, func(c *app.Config) {
		c.TLSCert, c.TLSKey = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	})
	if !strings.HasPrefix(e.URL, "https://") {
		t.Fatalf("URL %s, want https", e.URL)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	a := apptest.CallWith(t, client, http.MethodGet, e.URL+"/api/v1/status", "", bearer(e.ReadToken))
	var st apitypes.Status
	a.Decode(t, &st)
	if a.Code != http.StatusOK || st.Table == nil {
		t.Fatalf("status over https: %d %s", a.Code, a.Body)
	}
	a = apptest.CallWith(t, client, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":40}}`, bearer(e.Token))
	if a.Code != http.StatusOK {
		t.Fatalf("write over https: %d %s", a.Code, a.Body)
	}
	// Plain http to the TLS port is not served.
	plain := apptest.Call(t, http.MethodGet, "http://"+e.Server.Addr()+"/api/v1/status", "", bearer(e.ReadToken))
	if plain.Code == http.StatusOK {
		t.Fatalf("plain http to the TLS port: %d %s", plain.Code, plain.Body)
	}
	// A client that does not trust the certificate is refused.
	if _, err := http.Get(e.URL + "/healthz"); err == nil {
		t.Fatal("https with an untrusted certificate: no error")
	}
	// A cross-origin write over https is refused like over http; the
	// https origin of the server itself writes.
	a = apptest.CallWith(t, client, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":41}}`,
		map[string]string{"Authorization": "Bearer " + e.Token, "Origin": "http://" + e.Server.Addr()})
	if a.Code != http.StatusForbidden {
		t.Errorf("http origin writing to https: %d %s, want 403", a.Code, a.Body)
	}
	a = apptest.CallWith(t, client, http.MethodPut, e.URL+"/api/v1/weights", `{"weights":{"redis-a":41}}`,
		map[string]string{"Authorization": "Bearer " + e.Token, "Origin": e.URL})
	if a.Code != http.StatusOK {
		t.Errorf("same-origin write over https: %d %s", a.Code, a.Body)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key to
// dir (cert.pem, key.pem) and returns a pool that trusts it.
func writeCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "connpipe admin test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestStatusHidesPasswords: a password in CAPTURE_METRICS_URL is never in
// the status answer, whether the scrape works, is refused or fails.
func TestStatusHidesPasswords(t *testing.T) {
	const secret = "s3cret-Pa55"
	for _, tt := range []struct {
		name string
		code int
	}{{"scrape refused", http.StatusUnauthorized}, {"scrape works", http.StatusOK}, {"unreachable", 0}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, pass, _ := r.BasicAuth(); pass != secret || tt.code != http.StatusOK {
					http.Error(w, "no", http.StatusUnauthorized)
					return
				}
				fmt.Fprintln(w, "connpipe_capture_packets_total 7")
			}))
			defer srv.Close()
			u := strings.Replace(srv.URL, "http://", "http://scraper:"+secret+"@", 1) + "/metrics"
			if tt.code == 0 {
				u = "http://scraper:" + secret + "@127.0.0.1:1/metrics"
			}
			e := apptest.Start(t, func(c *app.Config) { c.CaptureMetricsURL = u })
			a := e.Read(t, "/api/v1/status")
			var st apitypes.Status
			a.Decode(t, &st)
			if st.Capture == nil {
				t.Fatalf("status has no capture: %s", a.Body)
			}
			if strings.Contains(string(a.Body), secret) {
				t.Fatalf("status shows the password: %s", a.Body)
			}
			if !strings.Contains(st.Capture.URL, "scraper:xxxxx@") {
				t.Errorf("capture url %q, want the user with the password redacted", st.Capture.URL)
			}
			if (tt.code == http.StatusOK) != (st.Capture.Error == "") {
				t.Errorf("capture error %q", st.Capture.Error)
			}
		})
	}
}

// TestMetricsOnTheOpsPort: /metrics is served on METRICS_ADDR without a
// token, and not at all on the API's address.
func TestMetricsOnTheOpsPort(t *testing.T) {
	e := apptest.Start(t, nil)
	if a := apptest.Call(t, http.MethodGet, e.URL+"/metrics", "", bearer(e.Token)); a.Code != http.StatusNotFound {
		t.Errorf("/metrics on the API address: %d, want 404", a.Code)
	}
	a := apptest.Call(t, http.MethodGet, "http://"+e.Server.MetricsAddr()+"/metrics", "", nil)
	if a.Code != http.StatusOK || !strings.Contains(string(a.Body), "connpipe_admin_control_ready 1") {
		t.Errorf("/metrics on METRICS_ADDR: %d %.200s", a.Code, a.Body)
	}
	for _, addr := range []string{e.Server.Addr(), e.Server.MetricsAddr()} {
		if a := apptest.Call(t, http.MethodGet, "http://"+addr+"/healthz", "", nil); a.Code != http.StatusOK {
			t.Errorf("/healthz on %s: %d", addr, a.Code)
		}
	}
}

// TestWaitFitsTheWriteTimeout: ?wait longer than the write timeout allows
// is refused up front rather than cut off mid-answer.
func TestWaitFitsTheWriteTimeout(t *testing.T) {
	e := apptest.Start(t, func(c *app.Config) { c.WriteTimeout = 4 * time.Second })
	a := apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights?wait=3s", `{"weights":{"redis-a":40}}`, bearer(e.Token))
	if a.Code != http.StatusBadRequest || !strings.Contains(string(a.Body), "2s") {
		t.Errorf("wait=3s with a 4s write timeout: %d %s, want 400 naming 2s", a.Code, a.Body)
	}
	a = apptest.Call(t, http.MethodPut, e.URL+"/api/v1/weights?wait=1s", `{"weights":{"redis-a":40}}`, bearer(e.Token))
	if a.Code != http.StatusOK {
		t.Errorf("wait=1s: %d %s", a.Code, a.Body)
	}
}
