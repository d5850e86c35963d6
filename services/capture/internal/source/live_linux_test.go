//go:build linux

package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/vethlab"
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

// TestLiveRingDrops fills a two-block ring without reading it: the kernel
// drops frames and freezes the ring, and Stats reports both. Then the
// frames in the ring read back decoded, with kernel timestamps.
func TestLiveRingDrops(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ls, err := OpenLive(LiveConfig{Interface: "lo", Filter: filter.FromListen(ap), Snaplen: 256,
		BlockSize: os.Getpagesize(), Blocks: 2, BlockTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	live := ls[0]
	defer live.Close()
	if len(ls) != 1 || live.LinkType() != decode.LinkEthernet || !live.SkipsOutgoing() {
		t.Fatalf("%d readers, lo link type %v", len(ls), live.LinkType())
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
	st, err := live.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops == 0 || st.Freezes == 0 {
		t.Fatalf("full ring: %+v, want drops and a freeze", st)
	}
	again, err := live.Stats()
	if err != nil || again.Drops != 0 {
		t.Fatalf("second read of the counters: %+v %v, want 0 drops (counts since the last read)", again, err)
	}
	// The ring is full: the next block is already handed over.
	if !live.Pending() {
		t.Fatal("Pending false on a full ring")
	}
	// Whatever the ring holds reads back as TCP packets to the listener.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n := 0
	for {
		blk, err := live.NextBlock(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
		for {
			f, ok := blk.Next()
			if !ok {
				break
			}
			var r record.Record
			if st := decode.Decode(live.LinkType(), f.Data, &r); st != decode.StatusOK || r.DstPort != ap.Port() {
				t.Fatalf("frame decodes to %v %v", st, r)
			}
			if f.TS < start || f.TS > time.Now().UnixNano() || len(f.Data) > 256 {
				t.Fatalf("frame ts %d (test started %d), %d bytes", f.TS, start, len(f.Data))
			}
			n++
		}
		if blk.Fault() != FaultNone {
			t.Fatalf("block fault %v", blk.Fault())
		}
	}
	if n == 0 {
		t.Fatal("nothing read back from the ring")
	}
	if live.Pending() {
		t.Fatal("Pending true on a ring read to the end")
	}
	t.Logf("%d frames dropped by the kernel, %d freezes, %d read from the ring", st.Drops, st.Freezes, n)
}

func TestLiveErrors(t *testing.T) {
	needRoot(t)
	if _, err := OpenLive(LiveConfig{Interface: "no-such-if0"}); err == nil {
		t.Fatal("opened a missing interface")
	}
	for _, cfg := range []LiveConfig{
		{Interface: "lo", BlockSize: 1000},
		{Interface: "lo", Blocks: -1},
		{Interface: "lo", BlockTimeout: time.Microsecond},
	} {
		if _, err := OpenLive(cfg); err == nil {
			t.Fatalf("opened %+v", cfg)
		}
	}
	ls, err := OpenLive(LiveConfig{Interface: "lo", Filter: filter.FromListen(netip.MustParseAddrPort("127.0.0.1:9"))})
	if err != nil {
		t.Fatal(err)
	}
	ls[0].Close()
	if _, err := ls[0].NextBlock(context.Background()); err == nil {
		t.Fatal("NextBlock on a closed reader")
	}
}

// TestLiveVethExact injects exactly N frames of 64 flows into a veth
// pair and reads the other end with 1 and with 2 readers: N records, each
// once; every flow on one reader, in the order it was sent.
func TestLiveVethExact(t *testing.T) {
	needRoot(t)
	lab := vethlab.ForTest(t, "cpt")
	const (
		n     = 40000
		flows = 64
		port  = 7210
	)
	// "any" reads lo too, where nothing of this arrives: the same frames.
	for _, tc := range []struct {
		ifname  string
		workers int
	}{{lab.RxIf, 1}, {lab.RxIf, 2}, {AnyInterface, 2}} {
		workers := tc.workers
		t.Run(fmt.Sprintf("interface=%s/workers=%d", tc.ifname, workers), func(t *testing.T) {
			var ls []*Live
			err := vethlab.Do(lab.Rx, func() error {
				var err error
				ls, err = OpenLive(LiveConfig{Interface: tc.ifname, Workers: workers,
					Filter: filter.FromListen(netip.AddrPortFrom(netip.AddrFrom4([4]byte(vethlab.DstIP)), port))})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) != workers {
				t.Fatalf("%d readers, want %d", len(ls), workers)
			}
			ctx, cancel := context.WithCancel(context.Background())
			type flowSeen struct {
				worker int
				next   uint32
			}
			var (
				mu      sync.Mutex
				seen    = map[uint16]*flowSeen{}
				total   int
				perW    = make([]int, workers)
				badness []string
				wg      sync.WaitGroup
			)
			for _, l := range ls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer l.Close()
					var r record.Record
					for {
						blk, err := l.NextBlock(ctx)
						if err != nil {
							return
						}
						mu.Lock()
						for {
							f, ok := blk.Next()
							if !ok {
								break
							}
							if st := decode.Decode(l.LinkType(), f.Data, &r); st != decode.StatusOK {
								badness = append(badness, "decode: "+st.String())
								continue
							}
							seq := uint32(f.Data[38])<<24 | uint32(f.Data[39])<<16 | uint32(f.Data[40])<<8 | uint32(f.Data[41])
							fs := seen[r.SrcPort]
							if fs == nil {
								fs = &flowSeen{worker: l.Worker()}
								seen[r.SrcPort] = fs
							}
							if fs.worker != l.Worker() || fs.next != seq {
								badness = append(badness, fmt.Sprintf("flow %d: seq %d on reader %d, want %d on reader %d",
									r.SrcPort, seq, l.Worker(), fs.next, fs.worker))
							}
							fs.next = seq + 1
							total++
							perW[l.Worker()]++
						}
						if blk.Fault() != FaultNone {
							badness = append(badness, "block fault "+blk.Fault().String())
						}
						mu.Unlock()
						l.Release()
					}
				}()
			}
			in, err := vethlab.NewInjector(lab.Tx, lab.TxIf, flows, port, 64)
			if err != nil {
				cancel()
				wg.Wait()
				t.Fatal(err)
			}
			defer in.Close()
			if _, err := in.Run(n, 200000); err != nil {
				t.Error(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				mu.Lock()
				done := total >= n
				mu.Unlock()
				if done {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // any extra frame would show now
			var drops uint64
			for _, l := range ls {
				st, err := l.Stats()
				if err != nil {
					t.Error(err)
				}
				drops += st.Drops
			}
			cancel()
			wg.Wait()
			if len(badness) > 0 {
				t.Fatalf("%d problems, first: %v", len(badness), badness[:min(5, len(badness))])
			}
			if total != n || len(seen) != flows || drops != 0 {
				t.Fatalf("%d records of %d flows, %d kernel drops; sent %d frames of %d flows", total, len(seen), drops, n, flows)
			}
			for w, c := range perW {
				if c == 0 {
					t.Errorf("reader %d got no frame: the fan-out did not spread %d flows", w, flows)
				}
			}
			t.Logf("%d records, per reader %v", total, perW)
		})
	}
}

// TestLiveFanoutFormsWithoutDuplicates opens 2 readers while frames are
// already flowing as fast as the injector goes: no (flow, seq) reaches two
// readers. It fails at once if the readers are not in one group (every frame
// twice); the moment between a reader's bind and its join, which the
// drop-all filter covers, is only microseconds and rarely hit here.
func TestLiveFanoutFormsWithoutDuplicates(t *testing.T) {
	needRoot(t)
	lab := vethlab.ForTest(t, "cpf")
	const (
		flows = 16
		port  = 7212
	)
	in, err := vethlab.NewInjector(lab.Tx, lab.TxIf, flows, port, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	injected := make(chan error, 1)
	go func() {
		_, err := in.Run(400000, 0) // as fast as it goes, under a second
		injected <- err
	}()
	time.Sleep(100 * time.Millisecond) // traffic is flowing before the group forms
	var ls []*Live
	err = vethlab.Do(lab.Rx, func() error {
		var err error
		ls, err = OpenLive(LiveConfig{Interface: lab.RxIf, Workers: 2, BlockSize: 64 << 10, BlockTimeout: 5 * time.Millisecond,
			Filter: filter.FromListen(netip.AddrPortFrom(netip.AddrFrom4([4]byte(vethlab.DstIP)), port))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu    sync.Mutex
		seen  = map[[2]uint32]int{} // flow port, seq -> reader
		dups  []string
		wg    sync.WaitGroup
		total int
	)
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				blk, err := l.NextBlock(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				for {
					f, ok := blk.Next()
					if !ok {
						break
					}
					d := f.Data
					k := [2]uint32{uint32(d[34])<<8 | uint32(d[35]), uint32(d[38])<<24 | uint32(d[39])<<16 | uint32(d[40])<<8 | uint32(d[41])}
					if w, ok := seen[k]; ok {
						dups = append(dups, fmt.Sprintf("port %d seq %d on readers %d and %d", k[0], k[1], w, l.Worker()))
					}
					seen[k] = l.Worker()
					total++
				}
				mu.Unlock()
				l.Release()
			}
		}()
	}
	if err := <-injected; err != nil {
		t.Error(err)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	for _, l := range ls {
		l.Close()
	}
	if len(dups) > 0 {
		t.Fatalf("%d frames read twice, first: %v", len(dups), dups[:min(5, len(dups))])
	}
	if total == 0 {
		t.Fatal("nothing read")
	}
	t.Logf("%d of %d frames read once each (the rest arrived before the group formed)", total, in.Sent())
}

// TestLiveAnyRefusesOtherFraming: "any" reads every interface with one
// framing, so an interface that is up and not Ethernet (a tun device)
// is refused by name.
func TestLiveAnyRefusesOtherFraming(t *testing.T) {
	needRoot(t)
	lab := vethlab.ForTest(t, "cpa")
	for _, args := range [][]string{
		{"-n", lab.Rx, "tuntap", "add", "dev", "cpa-tun", "mode", "tun"},
		{"-n", lab.Rx, "link", "set", "cpa-tun", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	err := vethlab.Do(lab.Rx, func() error {
		ls, err := OpenLive(LiveConfig{Interface: AnyInterface})
		for _, l := range ls {
			l.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "cpa-tun") || !strings.Contains(err.Error(), "not Ethernet") {
		t.Fatalf("any with a tun device up: %v, want a refusal naming cpa-tun", err)
	}
}
