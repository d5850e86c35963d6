package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// connsSpec describes a capture of many short keyed connections.
type connsSpec struct {
	conns int  // connections
	ids   int  // distinct session ids, connection i carries id i%ids
	split bool // the body goes in two segments, cut inside the id
	both  bool // also write the server's packets
}

// sessionID is the id connection i carries.
func (s connsSpec) sessionID(i int) string { return fmt.Sprintf("sess-%04d", i%s.ids) }

// connSrc is connection i's source address and port.
func connSrc(i int) (net.IP, uint16) {
	return net.IPv4(10, 1, byte(i>>8), byte(i)), uint16(20000 + i%40000)
}

// writeConnsPcap writes s's connections, one after another, each from its
// own source: SYN, the handshake's ACK, a SOAP-like request (in one or two
// segments), FIN and the last ACK, client to 127.0.0.1:7000.
func writeConnsPcap(tb testing.TB, s connsSpec) (path string, records int) {
	tb.Helper()
	path = filepath.Join(tb.TempDir(), "conns.pcap")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		tb.Fatal(err)
	}
	ts := time.Unix(1_700_000_000, 0)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	server := net.IPv4(127, 0, 0, 1)
	write := func(src, dst net.IP, sport, dport uint16, seq, ack uint32, flags string, payload string) {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, Window: 65535,
			SYN: strings.Contains(flags, "S"), ACK: strings.Contains(flags, "A"), FIN: strings.Contains(flags, "F"), PSH: strings.Contains(flags, "P")}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
			tb.Fatal(err)
		}
		ts = ts.Add(10 * time.Microsecond)
		ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}
		if err := w.WritePacket(ci, buf.Bytes()); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range s.conns {
		src, sport := connSrc(i)
		body := "POST /svc HTTP/1.1\r\nHost: svc\r\nContent-Type: text/xml\r\n\r\n" +
			"<Envelope><Header><SessionId>" + s.sessionID(i) + "</SessionId></Header><Body><Op/></Body></Envelope>"
		parts := []string{body}
		if s.split {
			cut := strings.Index(body, "sess-") + 6
			parts = []string{body[:cut], body[cut:]}
		}
		cseq, sseq := uint32(1000+i), uint32(90000+i)
		c2s := func(flags, payload string) {
			write(src, server, sport, 7000, cseq, sseq, flags, payload)
			records++
			cseq += uint32(len(payload))
		}
		s2c := func(flags string) {
			if s.both {
				write(server, src, 7000, sport, sseq, cseq, flags, "")
			}
		}
		c2s("S", "")
		cseq++
		s2c("SA")
		sseq++
		c2s("A", "")
		for _, p := range parts {
			c2s("AP", p)
		}
		c2s("AF", "")
		cseq++
		s2c("AF")
		sseq++
		c2s("A", "")
	}
	return path, records
}

// TestReplayKeyed: with KEY_RULE every record of every connection, SYN to
// last ACK, carries its connection's session id, also when the id is cut
// across two segments and the server's packets are in the file too.
func TestReplayKeyed(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec connsSpec
		rule string
	}{
		{"body rule", connsSpec{conns: 300, ids: 40}, `<SessionId>([^<]+)</SessionId>`},
		{"body rule, id split", connsSpec{conns: 300, ids: 40, split: true}, `<SessionId>([^<]+)</SessionId>`},
		{"body rule, both directions in the file", connsSpec{conns: 100, ids: 7, split: true, both: true}, `<SessionId>([^<]+)</SessionId>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, n := writeConnsPcap(t, tc.spec)
			t.Setenv("KEY_RULE", tc.rule)
			lines, err, reg := replay(t, []string{path}, "", "127.0.0.1:7000")
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != n {
				t.Fatalf("%d lines, want %d", len(lines), n)
			}
			perConn := map[string]int{}
			for _, l := range lines {
				f := strings.Split(l, "\t")
				if len(f) != 8 {
					t.Fatalf("line without a key: %q", l)
				}
				var a, b, c, d, port int
				if _, err := fmt.Sscanf(f[1]+" "+f[3], "%d.%d.%d.%d %d", &a, &b, &c, &d, &port); err != nil {
					t.Fatal(err)
				}
				i := c<<8 | d
				if want := tc.spec.sessionID(i); f[7] != want {
					t.Fatalf("connection %d: key %q, want %q (%q)", i, f[7], want, l)
				}
				perConn[f[1]]++
			}
			if len(perConn) != tc.spec.conns {
				t.Fatalf("%d connections keyed, want %d", len(perConn), tc.spec.conns)
			}
			if got := counter(t, reg, "connpipe_capture_key_connections_total"); got != float64(tc.spec.conns) {
				t.Fatalf("key_connections_total = %g, want %d", got, tc.spec.conns)
			}
		})
	}
}

// TestBadKeyConfig: a bad KEY_ value stops capture at start, naming the
// variable.
func TestBadKeyConfig(t *testing.T) {
	for _, tc := range []struct{ env, val string }{
		{"KEY_RULE", `<SessionId>([^<]+</SessionId>`},
		{"KEY_RULE", `<SessionId>[^<]+</SessionId>`},
		{"KEY_RULE", `(a)(b)`},
		{"KEY_SCAN_BYTES", "0"},
		{"KEY_SCAN_BYTES", "lots"},
		{"KEY_WAIT", "0s"},
		{"KEY_WAIT", "soon"},
		{"KEY_MAX_CONNS", "0"},
		{"KEY_MAX_BYTES", "-1"},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.env, tc.val)
			_, err := LoadConfig(nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.env) {
				t.Fatalf("err = %v, want one naming %s", err, tc.env)
			}
		})
	}
}

// BenchmarkReplayKeyRule replays the same capture of many short
// connections (5 to 6 records each, a SOAP-like request) to text output,
// without and with KEY_RULE, and reports records/s both ways and the ratio.
func BenchmarkReplayKeyRule(b *testing.B) {
	path, n := writeConnsPcap(b, connsSpec{conns: 40_000, ids: 1000, split: true})
	b.Setenv("LOG_LEVEL", "warn")
	run := func(rule string) time.Duration {
		b.Setenv("KEY_RULE", rule)
		cfg, err := LoadConfig([]string{"-r", path, "-listen", "127.0.0.1:7000"}, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		cfg.Stdout = io.Discard
		start := time.Now()
		if err := Run(context.Background(), cfg, discardLogger()); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var plain, keyed time.Duration
	b.ReportAllocs()
	for b.Loop() {
		plain += run("")
		keyed += run(`<SessionId>([^<]+)</SessionId>`)
	}
	p := float64(n*b.N) / plain.Seconds()
	k := float64(n*b.N) / keyed.Seconds()
	b.ReportMetric(p, "plain_records/s")
	b.ReportMetric(k, "keyed_records/s")
	b.ReportMetric(k/p, "keyed/plain")
}
