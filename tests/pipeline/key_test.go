package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

const (
	soapRule   = `<SessionId>([^<]+)</SessionId>`
	headerRule = `(?im)^X-Session-Id: *(\S+)`
)

// keyedConn is what a client sent: its address and the id in its payload.
type keyedConn struct {
	src  netip.AddrPort
	id   string // "" when the payload carries none
	hold time.Duration
}

// keyedTraffic opens conns connections to port, connection i from
// 127.0.<block>.(1+i%sources) carrying session id i%ids, as a SOAP body or
// an X-Session-Id header; with split the request goes in two writes cut
// inside the id, 30 ms apart (TCP_NODELAY: two segments).
func keyedTraffic(t testing.TB, port, block, sources, ids, conns int, header, split bool) []keyedConn {
	t.Helper()
	var (
		mu  sync.Mutex
		out []keyedConn
		wg  sync.WaitGroup
		sem = make(chan struct{}, 16)
	)
	errs := make(chan error, conns)
	for i := range conns {
		id := fmt.Sprintf("sess-%02d", i%ids)
		var req string
		if header {
			req = "GET /svc HTTP/1.1\r\nHost: svc\r\nX-Session-Id: " + id + "\r\nAccept: */*\r\n\r\n"
		} else {
			body := "<Envelope><Header><SessionId>" + id + "</SessionId></Header><Body><Op/></Body></Envelope>"
			req = fmt.Sprintf("POST /svc HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		parts := []string{req}
		if split {
			cut := strings.Index(req, "sess-") + 6
			parts = []string{req[:cut], req[cut:]}
		}
		src := net.IPv4(127, 0, byte(block), byte(1+i%sources))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := send(src, port, parts, 30*time.Millisecond)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			out = append(out, keyedConn{src: c, id: id})
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("traffic: %v", err)
	}
	return out
}

// send dials port from src, writes parts with pause between them and
// closes; it returns the client's address.
func send(src net.IP, port int, parts []string, pause time.Duration) (netip.AddrPort, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetNoDelay(true)
	for i, p := range parts {
		if i > 0 {
			time.Sleep(pause)
		}
		if _, err := io.WriteString(conn, p); err != nil {
			return netip.AddrPort{}, err
		}
	}
	return conn.LocalAddr().(*net.TCPAddr).AddrPort(), nil
}

// newKeyedSystem starts capture with rule, two consumers in sticky hash
// mode and admin.
func newKeyedSystem(t *testing.T, rule string) *system {
	t.Helper()
	s := newSystem(t, map[string]string{"KEY_RULE": rule, "KEY_WAIT": "1s"})
	s.startAdmin()
	s.startConsumer("c1")
	s.startConsumer("c2")
	if out, err := s.cli("mode", "set", "hash", "--key", "src", "--sticky", "--wait", "10s"); err != nil {
		t.Fatalf("admin mode set: %v\n%s", err, out)
	}
	s.startCapture()
	return s
}

// byConn groups stored records by client address, with the instance.
type storedRec struct {
	record.Record
	backend string
}

func (s *system) storedByConn() map[netip.AddrPort][]storedRec {
	a, b := s.storedAll()
	out := map[netip.AddrPort][]storedRec{}
	for name, rs := range map[string][]record.Record{"redis-a": a, "redis-b": b} {
		for _, r := range rs {
			ap := netip.AddrPortFrom(r.Src.Unmap(), r.SrcPort)
			out[ap] = append(out[ap], storedRec{r, name})
		}
	}
	return out
}

// checkKeyed waits until every connection's records, SYN through the ACK
// of its FIN, are stored, and checks that each carries its connection's id and every id's
// records sit on one instance. It returns the instance of each id.
func checkKeyed(t *testing.T, s *system, conns []keyedConn) map[string]string {
	t.Helper()
	var got map[netip.AddrPort][]storedRec
	waitFor(t, 30*time.Second, "every connection stored SYN through FIN", func() (bool, string) {
		got = s.storedByConn()
		for _, c := range conns {
			var syn, fin bool
			for _, r := range got[c.src] {
				syn = syn || r.Flags&record.FlagSYN != 0
				fin = fin || r.Flags&record.FlagFIN != 0
			}
			// The last ACK follows the FIN: wait for it too.
			if !syn || !fin || len(got[c.src]) < 5 {
				return false, fmt.Sprintf("%s: %d records, syn %v fin %v", c.src, len(got[c.src]), syn, fin)
			}
		}
		return true, ""
	})
	home := map[string]string{}
	for _, c := range conns {
		rs := got[c.src]
		if len(rs) < 5 {
			t.Fatalf("%s: %d records stored, want at least SYN, ACK, data, FIN, ACK", c.src, len(rs))
		}
		for _, r := range rs {
			if r.Key != c.id {
				t.Fatalf("%s: record flags %#04x stored with key %q, want %q", c.src, r.Flags, r.Key, c.id)
			}
			if h, ok := home[c.id]; ok && h != r.backend {
				t.Fatalf("id %s on %s and %s", c.id, h, r.backend)
			}
			home[c.id] = r.backend
		}
	}
	return home
}

// apiRecords asks admin for one key's records.
func (s *system) apiRecords(t *testing.T, key string) (owner string, counts map[string]int, n int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+s.adminAddr+"/api/v1/records?since=10m&key="+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token) // the write token reads too
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Records        []json.RawMessage `json:"records"`
		CountByBackend map[string]int    `json:"count_by_backend"`
		Owner          string            `json:"owner"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return res.Owner, res.CountByBackend, len(res.Records)
}

// TestKeyStickiness: records keyed by a session id in the payload land, SYN
// through FIN, on the instance that owns the id.
func TestKeyStickiness(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rule          string
		header, split bool
	}{
		{"soap body", soapRule, false, false},
		{"soap body, id split across segments", soapRule, false, true},
		{"http header, id split across segments", headerRule, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newKeyedSystem(t, tc.rule)
			conns := keyedTraffic(t, s.port, 61, 60, 40, 300, tc.header, tc.split)
			home := checkKeyed(t, s, conns)
			if len(home) != 40 {
				t.Fatalf("%d ids stored, want 40", len(home))
			}
			perIDSrcs := map[string]map[netip.Addr]bool{}
			for _, c := range conns {
				if perIDSrcs[c.id] == nil {
					perIDSrcs[c.id] = map[netip.Addr]bool{}
				}
				perIDSrcs[c.id][c.src.Addr()] = true
			}
			if len(perIDSrcs["sess-00"]) < 2 {
				t.Fatalf("traffic does not mix sources per id: %v", perIDSrcs["sess-00"])
			}
			if f := metric(t, s.capAddr, `connpipe_capture_key_connections_total{result="found"}`); f != 300 {
				t.Fatalf("found = %g, want 300", f)
			}
			// admin reads one id back from its owner only.
			owner, counts, n := s.apiRecords(t, "sess-07")
			if owner != home["sess-07"] || n == 0 || counts[owner] != n {
				t.Fatalf("records?key=sess-07: owner %q counts %v (%d records), stored on %s", owner, counts, n, home["sess-07"])
			}
			out, err := s.cli("records", "--since", "10m", "--key", "sess-07")
			if err != nil || strings.Count(out, "\tsess-07\n") != n {
				t.Fatalf("admin records --key: %v\n%s", err, tail(out, 5))
			}
		})
	}
}

// TestKeyStickinessAcrossChanges: a weight change and a consumer restart in
// the middle of the traffic move no id.
func TestKeyStickinessAcrossChanges(t *testing.T) {
	s := newKeyedSystem(t, soapRule)
	first := keyedTraffic(t, s.port, 62, 60, 40, 150, false, true)
	home1 := checkKeyed(t, s, first)
	if out, err := s.cli("weights", "set", "redis-a=95", "redis-b=5", "--wait", "10s"); err != nil {
		t.Fatalf("admin weights set: %v\n%s", err, out)
	}
	s.consumers[0].stop(10 * time.Second)
	s.startConsumer("c1b")
	second := keyedTraffic(t, s.port, 63, 60, 40, 150, false, true)
	home := checkKeyed(t, s, append(first, second...))
	for id, h := range home1 {
		if home[id] != h {
			t.Fatalf("id %s moved from %s to %s", id, h, home[id])
		}
	}
}

// TestKeyUnmatched: connections whose payload never matches are stored by
// source IP, each reason counted; a 10 MB connection is scanned only to the
// window and nothing stays held.
func TestKeyUnmatched(t *testing.T) {
	s := newKeyedSystem(t, soapRule)
	var (
		conns []keyedConn
		mu    sync.Mutex
		wg    sync.WaitGroup
	)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := net.IPv4(127, 0, 64, byte(1+i%5))
			parts := []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}
			pause := time.Duration(0)
			if i%2 == 0 { // held open past KEY_WAIT before closing: timeout
				parts, pause = append(parts, "tail"), 1500*time.Millisecond
			}
			c, err := send(src, s.port, parts, pause)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			conns = append(conns, keyedConn{src: c})
			mu.Unlock()
		}()
	}
	big, err := send(net.IPv4(127, 0, 64, 9), s.port, []string{strings.Repeat("x", 10<<20), "<SessionId>late</SessionId>"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	conns = append(conns, keyedConn{src: big})
	got := map[netip.AddrPort][]storedRec{}
	waitFor(t, 30*time.Second, "unkeyed connections stored", func() (bool, string) {
		got = s.storedByConn()
		for _, c := range conns {
			fin := false
			for _, r := range got[c.src] {
				fin = fin || r.Flags&record.FlagFIN != 0
			}
			if !fin {
				return false, fmt.Sprintf("%s: %d records", c.src, len(got[c.src]))
			}
		}
		return true, ""
	})
	bySrc := map[netip.Addr]string{}
	for _, c := range conns {
		for _, r := range got[c.src] {
			if r.Key != "" {
				t.Fatalf("%s: key %q on an unmatched connection", c.src, r.Key)
			}
			if h, ok := bySrc[c.src.Addr()]; ok && h != r.backend {
				t.Fatalf("source %s on %s and %s", c.src.Addr(), h, r.backend)
			}
			bySrc[c.src.Addr()] = r.backend
		}
	}
	m := func(series string) float64 { return metric(t, s.capAddr, series) }
	if n := m(`connpipe_capture_key_connections_total{result="timeout"}`); n != 10 {
		t.Errorf("timeout = %g, want 10", n)
	}
	if n := m(`connpipe_capture_key_connections_total{result="no_match"}`); n != 10 {
		t.Errorf("no_match = %g, want 10", n)
	}
	if n := m(`connpipe_capture_key_connections_total{result="window"}`); n != 1 {
		t.Errorf("window = %g, want 1", n)
	}
	if b := m(`connpipe_capture_key_bytes_scanned_total`); b > 8192+20*64 {
		t.Errorf("bytes scanned = %g: more than the window", b)
	}
	if h := m(`connpipe_capture_key_records_held`); h != 0 {
		t.Errorf("records held = %g after every connection ended", h)
	}
}

// TestKeyRuleErrors: a bad KEY_RULE stops capture at start, naming it.
func TestKeyRuleErrors(t *testing.T) {
	for _, rule := range []string{`<SessionId>([^<]+</SessionId>`, `<SessionId>[^<]+</SessionId>`, `(a)(b)`} {
		cmd := exec.Command(filepath.Join(binDir, "capture"))
		cmd.Env = []string{"KEY_RULE=" + rule, "METRICS_ADDR=", "OUTPUT=stdout"}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "KEY_RULE") {
			t.Fatalf("KEY_RULE=%q: err %v, output %q", rule, err, out)
		}
	}
}
