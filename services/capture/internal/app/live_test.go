//go:build linux

package app

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sys/unix"
)

// needRoot skips on a developer machine without CAP_NET_RAW and fails in CI.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("live capture tests need root (CAP_NET_RAW) and CI runs as root")
	}
	t.Skip("live capture needs root (CAP_NET_RAW)")
}

// rawCounter is an independent witness: its own AF_PACKET socket on lo,
// without any kernel filter, decoding with gopacket, keeping the incoming
// copy of each TCP packet to 127.0.0.1:port.
type rawCounter struct {
	fd   int
	port uint16
	mu   sync.Mutex
	seen []string // "src sport dport flags"
	stop atomic.Bool
	done chan struct{}
}

func startRawCounter(t *testing.T, port int) *rawCounter {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
		t.Fatal(err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	c := &rawCounter{fd: fd, port: uint16(port), done: make(chan struct{})}
	go c.loop()
	t.Cleanup(func() { c.stop.Store(true); <-c.done; unix.Close(fd) })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *rawCounter) loop() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for !c.stop.Load() {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // timeout: check stop
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil || uint16(tcp.DstPort) != c.port || !ip.DstIP.Equal(net.IPv4(127, 0, 0, 1)) {
			continue
		}
		var fl uint16
		for i, b := range []bool{tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR, tcp.NS} {
			if b {
				fl |= 1 << i
			}
		}
		c.mu.Lock()
		c.seen = append(c.seen, fmt.Sprintf("%s %d %d 0x%04x %d", ip.SrcIP, tcp.SrcPort, tcp.DstPort, fl, ip.Length))
		c.mu.Unlock()
	}
}

func (c *rawCounter) packets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

// TestLiveLoopback captures on lo with a sink while clients from 24
// distinct 127.0.x.y addresses connect, send a few bytes and close. The
// records must be exactly the packets an independent raw socket sees sent
// to the port: each once, from the right addresses.
func TestLiveLoopback(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	witness := startRawCounter(t, port)

	t.Setenv("LOG_LEVEL", "info")
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cfg.Interface, cfg.ListenAddr, cfg.Sink = "lo", fmt.Sprintf("127.0.0.1:%d", port), true
	cfg.Output, cfg.Stdout, cfg.MetricsAddr = OutputStdout, &out, "127.0.0.1:0"
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	if info.SinkAddr != cfg.ListenAddr || info.MetricsAddr == "" {
		t.Fatalf("info %+v", info)
	}

	start := time.Now().UnixNano()
	const clients = 24
	sources := map[string]bool{}
	for i := range clients {
		src := fmt.Sprintf("127.0.%d.%d", 1+i/8, 10+i%8)
		sources[src] = true
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", cfg.ListenAddr)
		if err != nil {
			t.Fatalf("dial from %s: %v", src, err)
		}
		if _, err := fmt.Fprintf(c, "hello from client %d\n", i); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	// Wait until both have seen the same number of packets for a while.
	var got, want []string
	deadline := time.Now().Add(15 * time.Second)
	stable := 0
	for time.Now().Before(deadline) && stable < 5 {
		time.Sleep(100 * time.Millisecond)
		g, w := out.Lines(), witness.packets()
		if len(g) == len(got) && len(w) == len(want) && len(g) == len(w) && len(g) >= clients*3 {
			stable++
		} else {
			stable = 0
		}
		got, want = g, w
	}
	end := time.Now().UnixNano()

	// Health and metrics over HTTP.
	resp, err := http.Get("http://" + info.MetricsAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + info.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "connpipe_capture_records_total") || !strings.Contains(string(body), "connpipe_capture_kernel_drops_total") {
		t.Fatalf("metrics lack the capture counters:\n%s", body)
	}

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}

	// Compare: same multiset of packets, each seen once.
	var recs []string
	seenSrc := map[string]bool{}
	for _, l := range got {
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("record %q", l)
		}
		ts, _ := strconv.ParseInt(f[0], 10, 64)
		if ts < start-int64(time.Second) || ts > end {
			t.Fatalf("record %q: timestamp outside the test's run", l)
		}
		if f[2] != "127.0.0.1" || f[4] != strconv.Itoa(port) {
			t.Fatalf("record %q not sent to %s", l, cfg.ListenAddr)
		}
		seenSrc[f[1]] = true
		recs = append(recs, strings.Join([]string{f[1], f[3], f[4], f[5], f[6]}, " "))
	}
	sort.Strings(recs)
	sort.Strings(want)
	if strings.Join(recs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("capture recorded %d packets, the raw socket saw %d:\ncapture:\n%s\nwitness:\n%s",
			len(recs), len(want), strings.Join(recs, "\n"), strings.Join(want, "\n"))
	}
	for src := range sources {
		if !seenSrc[src] {
			t.Errorf("no record from %s", src)
		}
	}
	if len(seenSrc) != len(sources) {
		t.Errorf("records from %d sources, want %d", len(seenSrc), len(sources))
	}
	t.Logf("%d packets from %d sources recorded once each", len(recs), len(seenSrc))
}

// TestLiveStopsOnCancel: a capture with no traffic returns promptly when
// its context ends.
func TestLiveStopsOnCancel(t *testing.T) {
	needRoot(t)
	t.Setenv("LOG_LEVEL", "info")
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Interface, cfg.ListenAddr = "lo", fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Output, cfg.Stdout, cfg.MetricsAddr = OutputStdout, io.Discard, ""
	_, cancel, runErr := start(t, cfg, testLogger(t))
	time.Sleep(50 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("Run took %v to return", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run blocked in a read after cancel")
	}
}

// TestLiveShutdownFlushes captures live with OUTPUT=amqp and a batch
// interval longer than the test, so every record is still in the open
// batch when the context ends: Run must send it and wait for the confirm.
func TestLiveShutdownFlushes(t *testing.T) {
	needRoot(t)
	u := testenv.AMQP(t)
	port := freePort(t)
	witness := startRawCounter(t, port)
	clearEnv(t)
	cfg, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AMQPURL, cfg.Interface, cfg.ListenAddr, cfg.Sink = u, "lo", fmt.Sprintf("127.0.0.1:%d", port), true
	cfg.MetricsAddr, cfg.BatchSize, cfg.BatchInterval = "127.0.0.1:0", 100000, time.Hour
	info, cancel, runErr := start(t, cfg, testLogger(t))
	defer cancel()
	waitHealthy(t, info.MetricsAddr)
	for i := range 5 {
		c, err := net.Dial("tcp", cfg.ListenAddr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "request %d\n", i)
		c.Close()
	}
	// Wait for the witness to settle, then for capture to have read as many.
	var want int
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		if n := len(witness.packets()); n == want && n > 0 && counter(t, info.Registry, "connpipe_capture_records_total") >= float64(n) {
			break
		} else {
			want = n
		}
	}
	if c := counter(t, info.Registry, "connpipe_capture_records_published_total"); c != 0 {
		t.Fatalf("%v records published before shutdown: the batch interval did not hold them", c)
	}
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if c := counter(t, info.Registry, "connpipe_capture_records_confirmed_total"); int(c) != want {
		t.Fatalf("records_confirmed_total %v, the raw socket saw %d packets", c, want)
	}
	ch := testenv.Channel(t, u)
	q, err := ch.QueueDeclarePassive(topology.RecordsQueue, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-dead-letter-exchange": topology.DeadExchange, "x-delivery-limit": topology.DeliveryLimit,
	})
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 1 {
		t.Fatalf("%d messages in %s, want the one flushed batch", q.Messages, topology.RecordsQueue)
	}
}
