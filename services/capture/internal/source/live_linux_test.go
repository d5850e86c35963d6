//go:build linux

package source

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/shared/record"
)

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

// TestLiveKernelDrops fills a tiny socket buffer without reading it: the
// kernel drops frames and Drops reports them. Then the queued frames read
// back decoded, with kernel timestamps.
func TestLiveKernelDrops(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	live, err := OpenLive(LiveConfig{Interface: "lo", Filter: filter.FromListen(ap), Snaplen: 256, RcvBuf: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if live.LinkType() != decode.LinkEthernet {
		t.Fatalf("lo link type %v", live.LinkType())
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	start := time.Now().UnixNano()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	for range 2000 {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	time.Sleep(100 * time.Millisecond)
	drops, err := live.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if drops == 0 {
		t.Fatal("no kernel drops with a full receive buffer")
	}
	again, err := live.Drops()
	if err != nil || again != 0 {
		t.Fatalf("second read of the drop counter: %d %v, want 0 (counts since the last read)", again, err)
	}
	// Whatever was queued reads back as TCP packets to the listener.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n := 0
	for {
		p, err := live.Next(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
		var r record.Record
		if st := decode.Decode(p.Link, p.Data, &r); st != decode.StatusOK || r.DstPort != ap.Port() {
			t.Fatalf("frame decodes to %v %v", st, r)
		}
		if p.TS < start || p.TS > time.Now().UnixNano() || len(p.Data) > 256 {
			t.Fatalf("frame ts %d (test started %d), %d bytes", p.TS, start, len(p.Data))
		}
		n++
	}
	t.Logf("%d frames dropped by the kernel, %d queued", drops, n)
}

func TestLiveErrors(t *testing.T) {
	needRoot(t)
	if _, err := OpenLive(LiveConfig{Interface: "no-such-if0"}); err == nil {
		t.Fatal("opened a missing interface")
	}
	live, err := OpenLive(LiveConfig{Interface: "lo", Filter: filter.FromListen(netip.MustParseAddrPort("127.0.0.1:9"))})
	if err != nil {
		t.Fatal(err)
	}
	live.Close()
	if _, err := live.Next(context.Background()); err == nil {
		t.Fatal("Next on a closed socket")
	}
}
