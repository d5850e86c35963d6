package ops_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/ops"
)

// TestIdleConnectionClosed: a keep-alive connection left idle is closed by
// the server after Timeouts.Idle, instead of being held open for ever.
func TestIdleConnectionClosed(t *testing.T) {
	idle := 300 * time.Millisecond
	s, err := ops.ListenMux("127.0.0.1:0", ops.Timeouts{ReadHeader: 5 * time.Second, Read: 5 * time.Second, Write: 5 * time.Second, Idle: idle}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.HandleHealth(func() error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("first answer: %s, close %v: want 200 on a kept-alive connection", resp.Status, resp.Close)
	}
	served := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(10 * idle))
	_, err = br.ReadByte()
	waited := time.Since(served)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("idle connection still open after %s (IdleTimeout %s)", waited, idle)
	}
	if err != io.EOF {
		t.Fatalf("idle connection: read %v, want EOF", err)
	}
	if waited < idle/2 {
		t.Fatalf("connection closed after %s, before IdleTimeout %s", waited, idle)
	}
	t.Logf("idle connection closed after %s (IdleTimeout %s)", waited.Round(time.Millisecond), idle)
}

func TestTimeoutsCheck(t *testing.T) {
	if _, err := ops.ListenMux("127.0.0.1:0", ops.Timeouts{ReadHeader: time.Second}, nil); err == nil {
		t.Fatal("ListenMux with zero timeouts: no error")
	}
}

// TestMetricsTokenAndAddress: with a token, /metrics answers 401 without
// it or with another, 200 with it; /healthz needs none. A host name binds
// the address of this host it resolves to.
func TestMetricsTokenAndAddress(t *testing.T) {
	const token = "metrics-tok-5e1"
	reg := ops.NewRegistry()
	s, err := ops.Listen("localhost:0", token, reg, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := net.SplitHostPort(s.Addr()); h != "127.0.0.1" && h != "::1" {
		t.Errorf("localhost bound %s, want a loopback address", s.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	for _, tt := range []struct {
		path, auth string
		code       int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer wrong", http.StatusUnauthorized},
		{"/metrics", token, http.StatusUnauthorized}, // no "Bearer "
		{"/metrics", "Bearer " + token, http.StatusOK},
		{"/healthz", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("GET %s with %q: %d, want %d", tt.path, tt.auth, resp.StatusCode, tt.code)
		}
		if tt.code == http.StatusOK && tt.path == "/metrics" && !strings.Contains(string(b), "go_goroutines") {
			t.Errorf("/metrics with the token: %.200s", b)
		}
	}
}
