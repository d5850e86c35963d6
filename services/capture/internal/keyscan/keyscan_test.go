package keyscan

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sink collects released records.
type sink struct{ recs []record.Record }

func (s *sink) Add(_ context.Context, r *record.Record) error {
	s.recs = append(s.recs, *r)
	return nil
}

// clock is a manual clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_700_000_000, 0)} }
func (c *clock) ts() int64           { return c.t.UnixNano() }
func keys(recs []record.Record) []string {
	return mapRecs(recs, func(r record.Record) string { return r.Key })
}

func mapRecs[T any](recs []record.Record, f func(record.Record) T) []T {
	out := make([]T, len(recs))
	for i, r := range recs {
		out[i] = f(r)
	}
	return out
}

// client is one client→server connection that builds segments.
type client struct {
	src   netip.Addr
	sport uint16
	isn   uint32
	seq   uint32 // next sequence number
}

func newClient(src string, sport uint16, isn uint32) *client {
	return &client{src: netip.MustParseAddr(src), sport: sport, isn: isn, seq: isn + 1}
}

var server = netip.MustParseAddr("127.0.0.1")

const serverPort = 7000

// pkt is a record and its segment.
type pkt struct {
	rec record.Record
	seg []byte
}

func (c *client) segment(flags uint16, seq uint32, payload string) pkt {
	seg := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(seg[0:], c.sport)
	binary.BigEndian.PutUint16(seg[2:], serverPort)
	binary.BigEndian.PutUint32(seg[4:], seq)
	binary.BigEndian.PutUint32(seg[8:], 1)
	seg[12] = 5 << 4
	seg[13] = byte(flags)
	copy(seg[20:], payload)
	return pkt{rec: record.Record{Src: c.src, Dst: server, SrcPort: c.sport, DstPort: serverPort,
		Flags: flags, IPLen: uint32(40 + len(payload))}, seg: seg}
}

func (c *client) syn() pkt { return c.segment(record.FlagSYN, c.isn, "") }
func (c *client) ack() pkt { return c.segment(record.FlagACK, c.seq, "") }
func (c *client) data(p string) pkt {
	s := c.segment(record.FlagACK|record.FlagPSH, c.seq, p)
	c.seq += uint32(len(p))
	return s
}
func (c *client) fin() pkt {
	s := c.segment(record.FlagACK|record.FlagFIN, c.seq, "")
	c.seq++
	return s
}
func (c *client) rst() pkt { return c.segment(record.FlagRST, c.seq, "") }

const soapRule = `<SessionId>([^<]+)</SessionId>`

func newScanner(t *testing.T, cfg Config) (*Scanner, *sink, *clock, *Metrics) {
	t.Helper()
	clk := newClock()
	if cfg.Rule == nil {
		cfg.Rule = regexpOrFail(t, soapRule)
	}
	cfg.Now = clk.now
	m := NewMetrics(prometheus.NewRegistry())
	cfg.Metrics = m
	out := &sink{}
	return New(cfg, out), out, clk, m
}

func regexpOrFail(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	re, err := ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

func send(t *testing.T, s *Scanner, clk *clock, ps ...pkt) {
	t.Helper()
	for _, p := range ps {
		p.rec.TS = clk.ts()
		if err := s.Packet(context.Background(), &p.rec, p.seg); err != nil {
			t.Fatal(err)
		}
		clk.add(time.Millisecond)
	}
}

func result(m *Metrics, r string) int { return int(testutil.ToFloat64(m.byResult[r])) }

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		rule string
		ok   bool
	}{
		{soapRule, true},
		{`(?im)^X-Session-Id: *(\S+)`, true},
		{`<SessionId>[^<]+</SessionId>`, false},
		{`(a)(b)`, false},
		{`(?:a)(b)`, true},
		{`([`, false},
	} {
		_, err := ParseRule(tc.rule)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRule(%q) = %v, want ok=%v", tc.rule, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrRule) {
			t.Errorf("ParseRule(%q): %v is not ErrRule", tc.rule, err)
		}
	}
}

// TestKeyed: every record of a connection, from the SYN to the last ACK
// after the FIN, carries the key, however the bytes were cut or ordered.
func TestKeyed(t *testing.T) {
	body := "POST / HTTP/1.1\r\nHost: x\r\n\r\n<Envelope><SessionId>abc-42</SessionId></Envelope>"
	cut := strings.Index(body, "abc-") + 2
	for _, tc := range []struct {
		name string
		rule string
		key  string
		data func(c *client) []pkt
	}{
		{"one segment", soapRule, "abc-42", func(c *client) []pkt { return []pkt{c.data(body)} }},
		{"split in the value", soapRule, "abc-42", func(c *client) []pkt {
			return []pkt{c.data(body[:cut]), c.data(body[cut:])}
		}},
		{"out of order", soapRule, "abc-42", func(c *client) []pkt {
			a, b := c.data(body[:cut]), c.data(body[cut:])
			return []pkt{b, a}
		}},
		{"three pieces reversed", soapRule, "abc-42", func(c *client) []pkt {
			a, b, d := c.data(body[:20]), c.data(body[20:cut]), c.data(body[cut:])
			return []pkt{d, b, a}
		}},
		{"header split in a greedy value", `(?im)^X-Session-Id: *(\S+)`, "s-123456", func(c *client) []pkt {
			h := "GET / HTTP/1.1\r\nX-Session-Id: s-123456\r\nHost: x\r\n\r\n"
			i := strings.Index(h, "s-123") + 5
			return []pkt{c.data(h[:i]), c.data(h[i:])}
		}},
		{"header value at the stream's end", `(?im)^X-Session-Id: *(\S+)`, "s-9", func(c *client) []pkt {
			return []pkt{c.data("GET / HTTP/1.1\r\nX-Session-Id: s-9")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, out, clk, m := newScanner(t, Config{Rule: regexpOrFail(t, tc.rule)})
			c := newClient("10.0.0.1", 40000, 1000)
			send(t, s, clk, c.syn(), c.ack())
			send(t, s, clk, tc.data(c)...)
			fin := c.fin()
			send(t, s, clk, fin, c.ack())
			// The same connection's last ACK, after the server's FIN.
			want := 4 + len(tc.data(newClient("10.0.0.1", 40000, 1000)))
			if len(out.recs) != want {
				t.Fatalf("released %d records, want %d (held: %+v)", len(out.recs), want, s.Stats())
			}
			for i, k := range keys(out.recs) {
				if k != tc.key {
					t.Errorf("record %d (flags %#x) key %q, want %q", i, out.recs[i].Flags, k, tc.key)
				}
			}
			if out.recs[0].Flags != record.FlagSYN {
				t.Errorf("first record flags %#x, want the SYN", out.recs[0].Flags)
			}
			if got := result(m, ResultFound); got != 1 {
				t.Errorf("found = %d, want 1", got)
			}
			if st := s.Stats(); st.Held != 0 || st.HeldBytes != 0 || st.Waiting != 0 {
				t.Errorf("after release: %+v", st)
			}
			if g := testutil.ToFloat64(m.RecordsHeld); g != 0 {
				t.Errorf("records_held = %g", g)
			}
		})
	}
}

// TestHeldUntilSettled: nothing of a connection leaves before its key is
// known, and then everything leaves in order.
func TestHeldUntilSettled(t *testing.T) {
	s, out, clk, m := newScanner(t, Config{})
	c := newClient("10.0.0.2", 40001, 5000)
	send(t, s, clk, c.syn(), c.ack(), c.data("<Envelope><Sess"))
	if len(out.recs) != 0 {
		t.Fatalf("%d records released before the key", len(out.recs))
	}
	if g := testutil.ToFloat64(m.RecordsHeld); g != 3 {
		t.Fatalf("records_held = %g, want 3", g)
	}
	send(t, s, clk, c.data("ionId>k1</SessionId>"))
	if got := mapRecs(out.recs, func(r record.Record) uint32 { return r.IPLen }); len(got) != 4 || got[0] != 40 || got[2] != 55 || got[3] != 60 {
		t.Fatalf("released ip lengths %v, want [40 40 55 60] in order", got)
	}
	// Later records pass straight through with the key.
	send(t, s, clk, c.data("more"))
	if len(out.recs) != 5 || out.recs[4].Key != "k1" {
		t.Fatalf("later record: %v", keys(out.recs))
	}
}

// TestUnkeyed: connections without a key are released without one, each
// for its reason, and counted.
func TestUnkeyed(t *testing.T) {
	t.Run("no match then FIN", func(t *testing.T) {
		s, out, clk, m := newScanner(t, Config{})
		c := newClient("10.0.0.3", 40002, 1)
		send(t, s, clk, c.syn(), c.ack(), c.data("GET / HTTP/1.1\r\n\r\n"), c.fin())
		if len(out.recs) != 4 || result(m, ResultNoMatch) != 1 {
			t.Fatalf("released %d, no_match %d", len(out.recs), result(m, ResultNoMatch))
		}
		for _, k := range keys(out.recs) {
			if k != "" {
				t.Fatalf("key %q on an unmatched connection", k)
			}
		}
	})
	t.Run("RST", func(t *testing.T) {
		s, out, clk, m := newScanner(t, Config{})
		c := newClient("10.0.0.3", 40003, 1)
		send(t, s, clk, c.syn(), c.ack(), c.data("hello"), c.rst())
		if len(out.recs) != 4 || result(m, ResultNoMatch) != 1 {
			t.Fatalf("released %d, no_match %d", len(out.recs), result(m, ResultNoMatch))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s, out, clk, m := newScanner(t, Config{Wait: time.Second})
		c := newClient("10.0.0.4", 40004, 1)
		send(t, s, clk, c.syn(), c.ack(), c.data("<SessionId>never closed"))
		clk.add(900 * time.Millisecond)
		if err := s.Expire(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(out.recs) != 0 {
			t.Fatalf("released %d before KEY_WAIT", len(out.recs))
		}
		clk.add(100 * time.Millisecond)
		if err := s.Expire(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(out.recs) != 3 || result(m, ResultTimeout) != 1 {
			t.Fatalf("released %d, timeout %d", len(out.recs), result(m, ResultTimeout))
		}
		// The rest of the connection passes through without waiting.
		send(t, s, clk, c.data("</SessionId>"))
		if len(out.recs) != 4 || out.recs[3].Key != "" {
			t.Fatalf("after the timeout: %d records, keys %q", len(out.recs), keys(out.recs))
		}
	})
	t.Run("window", func(t *testing.T) {
		s, out, clk, m := newScanner(t, Config{ScanBytes: 8192})
		c := newClient("10.0.0.5", 40005, 1)
		send(t, s, clk, c.syn(), c.ack())
		chunk := strings.Repeat("x", 1400)
		// 10 MB; the key after the window must not count.
		n := 10 << 20 / len(chunk)
		for i := range n {
			if i == 10 {
				send(t, s, clk, c.data("<SessionId>late</SessionId>"))
			}
			send(t, s, clk, c.data(chunk))
		}
		if len(out.recs) != n+3 {
			t.Fatalf("released %d of %d records", len(out.recs), n+3)
		}
		if result(m, ResultWindow) != 1 {
			t.Fatalf("window = %d", result(m, ResultWindow))
		}
		// The window was read in 1,400-byte segments: each byte is
		// scanned at most three times, nothing past the window.
		if b := testutil.ToFloat64(m.BytesScanned); b < 8192 || b > 3*8192 {
			t.Fatalf("bytes scanned = %g, want 8192..%d", b, 3*8192)
		}
		if st := s.Stats(); st.Held != 0 || st.HeldBytes != 0 {
			t.Fatalf("after the window: %+v", st)
		}
	})
}

// TestBounds: the oldest waiting connection goes out first, counted, when
// too many connections or bytes wait.
func TestBounds(t *testing.T) {
	t.Run("connections", func(t *testing.T) {
		s, out, clk, m := newScanner(t, Config{MaxConns: 3})
		for i := range 5 {
			c := newClient("10.0.1.1", uint16(41000+i), 1)
			send(t, s, clk, c.syn())
		}
		if got := result(m, ResultEvicted); got != 2 {
			t.Fatalf("evicted %d, want 2", got)
		}
		if len(out.recs) != 2 || out.recs[0].SrcPort != 41000 || out.recs[1].SrcPort != 41001 {
			t.Fatalf("released %v, want the two oldest", mapRecs(out.recs, func(r record.Record) uint16 { return r.SrcPort }))
		}
		if st := s.Stats(); st.Conns != 3 || st.Waiting != 3 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		max := 10*recordBytes + 100
		s, out, clk, m := newScanner(t, Config{MaxBytes: max})
		for i := range 6 {
			c := newClient("10.0.1.2", uint16(42000+i), 1)
			send(t, s, clk, c.syn(), c.ack(), c.data("no key here yet"))
		}
		if st := s.Stats(); st.HeldBytes > max {
			t.Fatalf("held %d bytes, bound %d", st.HeldBytes, max)
		}
		if result(m, ResultEvicted) == 0 || len(out.recs) == 0 || out.recs[0].SrcPort != 42000 {
			t.Fatalf("evicted %d, released %d (first port %v)", result(m, ResultEvicted), len(out.recs), mapRecs(out.recs, func(r record.Record) uint16 { return r.SrcPort }))
		}
	})
	t.Run("settled connections are forgotten first, then after Linger", func(t *testing.T) {
		s, _, clk, m := newScanner(t, Config{MaxConns: 2})
		a := newClient("10.0.1.3", 43000, 1)
		send(t, s, clk, a.syn(), a.ack(), a.data("<SessionId>a</SessionId>"))
		b := newClient("10.0.1.3", 43001, 1)
		send(t, s, clk, b.syn())
		c := newClient("10.0.1.3", 43002, 1)
		send(t, s, clk, c.syn())
		if result(m, ResultEvicted) != 0 {
			t.Fatal("a waiting connection was evicted while a settled one could go")
		}
		clk.add(Linger)
		if err := s.Expire(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Conns != 0 {
			t.Fatalf("after Linger: %+v", st)
		}
	})
}

// TestClose releases every held record, without a key.
func TestClose(t *testing.T) {
	s, out, clk, m := newScanner(t, Config{})
	for i := range 10 {
		c := newClient("10.0.2.1", uint16(44000+i), 1)
		send(t, s, clk, c.syn(), c.ack())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(out.recs) != 20 || result(m, ResultShutdown) != 10 {
		t.Fatalf("released %d, shutdown %d", len(out.recs), result(m, ResultShutdown))
	}
	var r record.Record
	if err := s.Packet(context.Background(), &r, nil); err == nil {
		t.Fatal("Packet after Close succeeded")
	}
}

// TestReuse: a new SYN on a settled connection's address and ports starts a
// new connection; a retransmitted SYN does not.
func TestReuse(t *testing.T) {
	s, out, clk, _ := newScanner(t, Config{})
	a := newClient("10.0.3.1", 45000, 100)
	send(t, s, clk, a.syn(), a.ack(), a.data("<SessionId>first</SessionId>"), a.syn())
	if len(out.recs) != 4 || out.recs[3].Key != "first" {
		t.Fatalf("retransmitted SYN: %q", keys(out.recs))
	}
	b := newClient("10.0.3.1", 45000, 9000)
	send(t, s, clk, b.syn(), b.ack())
	if len(out.recs) != 4 {
		t.Fatalf("new connection's records not held: %q", keys(out.recs))
	}
	send(t, s, clk, b.data("<SessionId>second</SessionId>"))
	if got := keys(out.recs[4:]); len(got) != 3 || got[0] != "second" || got[2] != "second" {
		t.Fatalf("second connection keys %q", got)
	}
}

// TestMidStream: a connection whose handshake was not seen is scanned from
// its first segment.
func TestMidStream(t *testing.T) {
	s, out, clk, _ := newScanner(t, Config{})
	c := newClient("10.0.4.1", 46000, 77)
	c.seq += 5000
	send(t, s, clk, c.data("xx <SessionId>mid</SessionId>"))
	if len(out.recs) != 1 || out.recs[0].Key != "mid" {
		t.Fatalf("keys %q", keys(out.recs))
	}
}
