package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const readToken = "test-read-token"

// get reads url with token and returns the status and body.
func get(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// readCLI runs the admin CLI with the read token only.
func (s *system) readCLI(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "admin"), args...)
	cmd.Env = []string{"ADMIN_URL=http://" + s.adminAddr, "ADMIN_READ_TOKEN=" + readToken}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPasswordsNeverShown: one backend of BACKENDS has a password in its
// address and another is added at runtime under a named credential whose
// password is in REDIS_CREDENTIALS; both Redis are down. Adding a backend
// with the password in its address is refused with the way to do it
// instead. The records API (which reports why each backend could not be
// read), status, stats, history, the routing table, the page and what it
// reads, the CLI, every service's log at debug level and every /metrics
// never show the password; where they name a backend they show it
// redacted.
func TestPasswordsNeverShown(t *testing.T) {
	const secret = "secpass"
	downPW, downCred := freePort(t), freePort(t) // nothing listens: stopped Redis
	s := newSystem(t, map[string]string{"LOG_LEVEL": "debug", "ADMIN_READ_TOKEN": readToken, "BACKEND_ALLOW": "127.0.0.1:*",
		"REDIS_CREDENTIALS": "oom=secuser:" + secret})
	s.env["BACKENDS"] += fmt.Sprintf(",redis-pw=redis://secuser:%s@127.0.0.1:%d/0", secret, downPW)
	s.startAdmin()
	c := s.startConsumer("consumer-1")
	s.startCapture()
	shownPW := fmt.Sprintf("secuser:xxxxx@127.0.0.1:%d", downPW)
	shown := fmt.Sprintf("127.0.0.1:%d", downCred)

	refused, err := s.cli("backends", "add", "redis-oom", fmt.Sprintf("redis://secuser:%s@%s/0", secret, shown))
	if err == nil || !strings.Contains(refused, "--credential NAME") {
		t.Fatalf("backends add with a password in the address: %v\n%s", err, refused)
	}
	out, err := s.cli("backends", "add", "redis-oom", shown, "--credential", "oom", "--weight", "10")
	if err != nil {
		t.Fatalf("backends add: %v\n%s", err, out)
	}
	waitFor(t, 20*time.Second, "consumer applied the change", func() (bool, string) {
		v := metric(t, c.addr, "connpipe_consumer_control_version")
		return v >= 1, fmt.Sprintf("version %v", v)
	})
	traffic(t, s.port, 1, 1, 5)

	answers := []string{"refused add: " + refused, "add: " + out}
	code, body := get(t, "http://"+s.adminAddr+"/api/v1/records?since=20s", readToken)
	var rec struct {
		Errors map[string]string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &rec); err != nil || code != http.StatusOK ||
		!strings.Contains(rec.Errors["redis-oom"], shown) || !strings.Contains(rec.Errors["redis-pw"], shownPW) {
		t.Fatalf("records: %d %v %s: want errors for redis-oom naming %s and redis-pw naming %s", code, err, body, shown, shownPW)
	}
	answers = append(answers, "records: "+body)
	for _, path := range []string{"/api/v1/status", "/api/v1/stats", "/api/v1/weights", "/api/v1/history", "/", "/ui/app.js"} {
		code, body := get(t, "http://"+s.adminAddr+path, readToken)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d %.300s", path, code, body)
		}
		answers = append(answers, path+": "+body)
	}
	if _, body := get(t, "http://"+s.adminAddr+"/api/v1/status", readToken); !strings.Contains(body, shownPW) {
		t.Errorf("status does not name redis-pw redacted (%s): %.2000s", shownPW, body)
	}
	for _, args := range [][]string{{"records", "--since", "20s"}, {"status"}, {"weights", "get"}, {"history"}} {
		out, _ := s.readCLI(args...)
		answers = append(answers, "admin "+strings.Join(args, " ")+": "+out)
	}
	if out, _ := s.readCLI("records", "--since", "20s"); !strings.Contains(out, shownPW) {
		t.Errorf("admin records does not report redis-pw redacted:\n%s", out)
	}
	for _, ops := range []string{s.adminOps, c.addr, s.capAddr} {
		_, body := get(t, "http://"+ops+"/metrics", "")
		answers = append(answers, ops+"/metrics: "+body)
	}
	s.admin.stop(10 * time.Second)
	c.stop(10 * time.Second)
	s.capture.stop(10 * time.Second)
	for _, p := range []*proc{s.admin, c.proc, s.capture} {
		answers = append(answers, p.name+" log: "+p.out.String())
	}
	if !strings.Contains(c.out.String(), shownPW) || !strings.Contains(c.out.String(), "redis-oom") {
		t.Errorf("the consumer's log never names the backends: the test would not see a leak there")
	}
	for _, a := range answers {
		if i := strings.Index(a, secret); i >= 0 {
			t.Errorf("the password is shown: %.80s … %s", a, a[max(0, i-200):min(len(a), i+100)])
		}
	}
}
