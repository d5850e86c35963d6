package keyscan

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// streamBody is n bytes of filler that end in a SOAP session id, so the
// key is complete only with the stream's last byte.
func streamBody(n int) string {
	tail := "<SessionId>k-42</SessionId>"
	return strings.Repeat("x", n-len(tail)) + tail
}

// scanCount runs one connection carrying body cut into segments of size
// seg (in order, then FIN) and returns the bytes scanned and the key.
func scanCount(t *testing.T, rule string, body string, seg int) (float64, string) {
	s, out, clk, m := newScanner(t, Config{Rule: regexpOrFail(t, rule)})
	c := newClient("10.0.9.1", 40900, 1)
	send(t, s, clk, c.syn(), c.ack())
	for i := 0; i < len(body); i += seg {
		send(t, s, clk, c.data(body[i:min(i+seg, len(body))]))
	}
	send(t, s, clk, c.fin())
	if len(out.recs) == 0 {
		t.Fatalf("nothing released")
	}
	return testutil.ToFloat64(m.BytesScanned), out.recs[0].Key
}

// 8,191 one-byte segments cost at most three times what one 8,191-byte
// segment costs, counted in bytes matched against the rule: a scan reads
// the new bytes and the overlap a match can span, and is put off while
// the new bytes are fewer than that overlap.
func TestOneByteSegmentsScanLinear(t *testing.T) {
	body := streamBody(8191)
	for _, rule := range []string{
		soapRule,                          // unbounded: + (the overlap is the whole window)
		`<SessionId>([a-z0-9-]{1,64})</`,  // bounded: at most 78 bytes
		`(?m)^.*<SessionId>([^<]+)</Sess`, // ^ looks back: rescans from the start
	} {
		t.Run(rule, func(t *testing.T) {
			one, k1 := scanCount(t, rule, body, len(body))
			many, k2 := scanCount(t, rule, body, 1)
			t.Logf("bytes scanned: one segment %g, 8191 one-byte segments %g (%.2fx)", one, many, many/one)
			if k1 != "k-42" || k2 != "k-42" {
				t.Fatalf("keys %q and %q, want k-42", k1, k2)
			}
			if many > 3*one {
				t.Fatalf("one-byte segments scanned %g bytes, more than 3x the %g of one segment", many, one)
			}
		})
	}
}

func TestMatchSpan(t *testing.T) {
	for _, tc := range []struct {
		rule string
		n    int
		ok   bool
	}{
		{`sid=([0-9a-f]{32})`, 36, true},
		{`<SessionId>([^<]+)</SessionId>`, 0, false},
		{`(?i)key:(\d{1,8})`, 4*4 + 8, true},
		{`(a|bcd)é`, 5, true},
		{`^(x)`, 0, false},
		{`\b(x)`, 0, false},
		{`(x)$`, 1, true},
		{`(.)`, 4, true},
	} {
		n, ok := MatchSpan(regexpOrFail(t, tc.rule))
		if n != tc.n || ok != tc.ok {
			t.Errorf("MatchSpan(%s) = %d, %v; want %d, %v", tc.rule, n, ok, tc.n, tc.ok)
		}
	}
}

// A key split by a one-byte trickle that stops before enough new bytes
// arrive to scan is found at the next Expire tick, well before Wait.
func TestDeferredScanAtTick(t *testing.T) {
	s, out, clk, m := newScanner(t, Config{})
	c := newClient("10.0.9.2", 40901, 1)
	send(t, s, clk, c.syn(), c.ack(), c.data(strings.Repeat("y", 200)+"<SessionId>z</SessionId"))
	send(t, s, clk, c.data(">"), c.data(" "))
	if len(out.recs) != 0 {
		t.Fatalf("released %d records before the tick", len(out.recs))
	}
	if err := s.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(out.recs) != 5 || out.recs[0].Key != "z" || result(m, ResultFound) != 1 {
		t.Fatalf("after the tick: %d records, keys %q", len(out.recs), keys(out.recs))
	}
}

// discard counts released records and keeps none.
type discard struct{ n int }

func (d *discard) Add(context.Context, *record.Record) error { d.n++; return nil }

// A flood of 1.5 M new connections (SYN and a first segment without the
// key each) stays within KEY_MAX_CONNS and KEY_MAX_BYTES, counted, and the
// heap within KEY_MAX_BYTES + 64 MB of the idle heap.
func TestConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("1.5 M connections take a few seconds")
	}
	for _, tc := range []struct {
		name     string
		maxConns int
		maxBytes int64
	}{
		{"defaults", DefaultMaxConns, DefaultMaxBytes},
		{"bytes bind", 1 << 20, 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) { flood(t, tc.maxConns, tc.maxBytes) })
	}
}

func flood(t *testing.T, maxConns int, maxBytes int64) {
	const conns = 1_500_000
	clk := newClock()
	m := NewMetrics(nil)
	out := &discard{}
	s := New(Config{Rule: regexpOrFail(t, soapRule), MaxConns: maxConns, MaxBytes: maxBytes, Now: clk.now, Metrics: m}, out)
	var idle, ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&idle)
	var peak, live uint64
	payload := strings.Repeat("p", 100)
	ctx := context.Background()
	for i := range conns {
		c := &client{src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), sport: uint16(1024 + i%60000), isn: uint32(i), seq: uint32(i) + 1}
		for _, p := range []pkt{c.syn(), c.data(payload)} {
			p.rec.TS = clk.ts()
			if err := s.Packet(ctx, &p.rec, p.seg); err != nil {
				t.Fatal(err)
			}
		}
		clk.add(1000) // 1.5 M connections in 1.5 s of packet time
		if i%50_000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			runtime.GC() // what is retained, whatever GOGC leaves as garbage
			runtime.ReadMemStats(&ms)
			live = max(live, ms.HeapAlloc)
			if st := s.Stats(); st.Conns > maxConns || st.Bytes > maxBytes {
				t.Fatalf("after %d connections: %d tracked (bound %d), %d bytes (bound %d)", i, st.Conns, maxConns, st.Bytes, maxBytes)
			}
		}
	}
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapAlloc)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	live = max(live, ms.HeapAlloc)
	st := s.Stats()
	grew := int64(live) - int64(idle.HeapAlloc)
	evicted := result(m, ResultEvicted)
	t.Logf("%d connections, KEY_MAX_CONNS %d, KEY_MAX_BYTES %d: %d tracked, %.1f MB counted, %d evicted, %d released; "+
		"live heap at most +%.1f MB over idle, heap before a GC at most +%.1f MB",
		conns, maxConns, maxBytes, st.Conns, float64(st.Bytes)/1e6, evicted, out.n,
		float64(grew)/1e6, float64(int64(peak)-int64(idle.HeapAlloc))/1e6)
	if st.Conns > maxConns || st.Bytes > maxBytes {
		t.Fatalf("%d tracked (bound %d), %d bytes (bound %d)", st.Conns, maxConns, st.Bytes, maxBytes)
	}
	if evicted < conns-st.Waiting-1 || out.n+2*st.Waiting != 2*conns {
		t.Fatalf("evicted %d, released %d records, %d waiting: records lost or not counted", evicted, out.n, st.Waiting)
	}
	if grew > maxBytes+64e6 {
		t.Fatalf("live heap grew %.1f MB, bound KEY_MAX_BYTES + 64 MB = %.1f MB", float64(grew)/1e6, float64(maxBytes+64e6)/1e6)
	}
	runtime.KeepAlive(s)
}

// BenchmarkSegments is the pair behind TestOneByteSegmentsScanLinear, in
// time: a connection of 8,191 bytes in one segment, or in 8,191 (whose
// records, 8,195 of them, are all held until the key is found).
func BenchmarkSegments(b *testing.B) {
	body := streamBody(8191)
	rules := []struct{ name, rule string }{
		{"literal", soapRule},                          // a literal prefix: the regexp skips to it
		{"fold", `(?i)<sessionid>([^<]+)</sessionid>`}, // a first byte to skip to
		{"open", `([a-z0-9-]+)</SessionId>`},           // none: a match may start at every byte
	}
	for _, rule := range rules {
		for _, seg := range []int{8191, 1} {
			b.Run(fmt.Sprintf("rule=%s/seg=%d", rule.name, seg), func(b *testing.B) { benchSegments(b, rule.rule, body, seg) })
		}
	}
}

func benchSegments(b *testing.B, rule, body string, seg int) {
	clk := newClock()
	out := &discard{}
	s := New(Config{Rule: mustRule(rule), Now: clk.now}, out)
	ctx := context.Background()
	c := newClient("10.1.0.1", 1024, 1)
	pkts := []pkt{c.syn(), c.ack()}
	for j := 0; j < len(body); j += seg {
		pkts = append(pkts, c.data(body[j:min(j+seg, len(body))]))
	}
	pkts = append(pkts, c.fin())
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// A new connection each time: another address and port.
		port := uint16(1024 + i%60000)
		src := netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)})
		for k := range pkts {
			p := &pkts[k]
			p.rec.SrcPort, p.rec.Src = port, src
			binary.BigEndian.PutUint16(p.seg[0:2], port)
			if err := s.Packet(ctx, &p.rec, p.seg); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(out.n)/float64(b.N), "records/op")
}

func mustRule(s string) *regexp.Regexp {
	re, err := ParseRule(s)
	if err != nil {
		panic(err)
	}
	return re
}

// A tick scans what was put off but does not take a match that reaches
// the end of the bytes read: the greedy value may go on.
func TestTickLeavesAnOpenMatch(t *testing.T) {
	s, out, clk, _ := newScanner(t, Config{Rule: regexpOrFail(t, `(?im)^X-Session-Id: *(\S+)`)})
	c := newClient("10.0.9.3", 40902, 1)
	send(t, s, clk, c.syn(), c.ack(), c.data("GET / HTTP/1.1\r\n"+strings.Repeat("A: b\r\n", 20)+"X-Session-Id: s-1"), c.data("2"))
	if err := s.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(out.recs) != 0 {
		t.Fatalf("tick released %d records on an open match (key %q)", len(out.recs), out.recs[0].Key)
	}
	send(t, s, clk, c.data("34\r\n"))
	if err := s.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(out.recs) != 5 || out.recs[0].Key != "s-1234" {
		t.Fatalf("released %d, keys %q; want 5 with s-1234", len(out.recs), keys(out.recs))
	}
}
