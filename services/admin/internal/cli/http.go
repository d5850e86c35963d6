package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

type client struct {
	base      string
	token     string // for writes
	readToken string // for GET
	out       io.Writer
	errw      io.Writer
	http      http.Client
}

// httpError is an answer other than 2xx.
type httpError struct {
	status  string
	code    int
	message string
	version *int64
}

func (e *httpError) Error() string {
	if e.message == "" {
		return e.status
	}
	return e.message + " (" + e.status + ")"
}

// do sends a request and decodes a 2xx JSON answer into out.
func (c *client) do(ctx context.Context, method, path string, body any, header http.Header, timeout time.Duration, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("ADMIN_URL %q: %w", c.base, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok := c.token
	if method == http.MethodGet {
		tok = c.readToken
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w (is admin serving there? set ADMIN_URL)", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		he := &httpError{status: resp.Status, code: resp.StatusCode}
		var e struct {
			Error   string `json:"error"`
			Version *int64 `json:"version"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			he.message, he.version = e.Error, e.Version
		} else {
			he.message = strings.TrimSpace(string(data))
		}
		return resp.Header, he
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s %s: answer is not the JSON expected: %w", method, path, err)
		}
	}
	return resp.Header, nil
}
