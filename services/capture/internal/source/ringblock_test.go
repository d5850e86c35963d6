package source

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// forgedFrame is one frame to put in a forged block.
type forgedFrame struct {
	sec, nsec uint32
	data      []byte
	wire      uint32 // 0: len(data)
	pktType   uint8
	vlan      uint16 // with vlanValid
	vlanValid bool
	tpid      uint16 // with tpidValid
	tpidValid bool
}

// forgeMac is where the kernel puts the frame data for Ethernet (tp_mac):
// TPACKET_ALIGN(68 + 16) - 14.
const forgeMac = 82

// forgeBlock lays frames out the way the kernel does (prb_fill_curr_block,
// prb_close_block) in a block of size bytes.
func forgeBlock(size int, status uint32, frames []forgedFrame) []byte {
	b := make([]byte, size)
	off := blockHdrLen
	ne.PutUint32(b[16:], uint32(off))
	prev := -1
	for _, f := range frames {
		h := b[off:]
		wire := f.wire
		if wire == 0 {
			wire = uint32(len(f.data))
		}
		ne.PutUint32(h[4:], f.sec)
		ne.PutUint32(h[8:], f.nsec)
		ne.PutUint32(h[12:], uint32(len(f.data)))
		ne.PutUint32(h[16:], wire)
		var st uint32 = tpStatusUser
		if f.vlanValid {
			st |= tpStatusVLANValid
			ne.PutUint32(h[32:], uint32(f.vlan))
		}
		if f.tpidValid {
			st |= tpStatusVLANTPID
			ne.PutUint16(h[36:], f.tpid)
		}
		ne.PutUint32(h[20:], st)
		ne.PutUint16(h[24:], forgeMac)
		h[frameHdrLen+10] = f.pktType
		copy(h[forgeMac:], f.data)
		n := (forgeMac + len(f.data) + frameAlign - 1) &^ (frameAlign - 1)
		ne.PutUint32(h[0:], uint32(n))
		prev = off
		off += n
	}
	if prev >= 0 {
		ne.PutUint32(b[prev:], 0) // the last frame has no next
	}
	ne.PutUint32(b[8:], status)
	ne.PutUint32(b[12:], uint32(len(frames)))
	ne.PutUint32(b[20:], uint32(off))
	return b
}

func walk(b []byte) ([]Frame, Fault) {
	blk := ParseBlock(b)
	var out []Frame
	for {
		f, ok := blk.Next()
		if !ok {
			return out, blk.Fault()
		}
		out = append(out, *f)
	}
}

func threeFrames() []forgedFrame {
	return []forgedFrame{
		{sec: 1700000000, nsec: 5, data: []byte("first frame, sixty bytes or so of ethernet"), wire: 60},
		{sec: 1700000001, nsec: 999999999, data: []byte("second"), pktType: packetOutgoing},
		{sec: 1700000002, data: bytes.Repeat([]byte{0xab}, 1500), vlanValid: true, vlan: 0x2064, tpidValid: true, tpid: 0x88a8},
	}
}

func TestRingBlockWellFormed(t *testing.T) {
	for _, status := range []uint32{tpStatusUser, tpStatusUser | tpStatusBlkTmo, tpStatusUser | tpStatusLosing | tpStatusBlkTmo} {
		in := threeFrames()
		got, fault := walk(forgeBlock(4096, status, in))
		if fault != FaultNone || len(got) != len(in) {
			t.Fatalf("status %#x: %d frames, fault %v; want %d, none", status, len(got), fault, len(in))
		}
		for i, f := range got {
			if want := int64(in[i].sec)*1e9 + int64(in[i].nsec); f.TS != want {
				t.Errorf("frame %d ts %d, want %d", i, f.TS, want)
			}
			if !bytes.Equal(f.Data, in[i].data) {
				t.Errorf("frame %d data %q", i, f.Data)
			}
			if f.PktType != in[i].pktType {
				t.Errorf("frame %d pkttype %d", i, f.PktType)
			}
		}
		if got[0].WireLen != 60 || got[0].HasVLAN {
			t.Errorf("frame 0: wire %d, vlan %v", got[0].WireLen, got[0].HasVLAN)
		}
		if f := got[2]; !f.HasVLAN || f.VLAN != 0x2064 || f.VLANTPID != 0x88a8 {
			t.Errorf("frame 2 vlan %v %#x %#x", f.HasVLAN, f.VLAN, f.VLANTPID)
		}
	}
	// A tag without TP_STATUS_VLAN_TPID_VALID is 802.1Q.
	got, _ := walk(forgeBlock(512, tpStatusUser, []forgedFrame{{data: []byte("x"), vlanValid: true, vlan: 7}}))
	if len(got) != 1 || got[0].VLANTPID != ethPVLAN || got[0].VLAN != 7 {
		t.Fatalf("%+v", got)
	}
}

func TestRingBlockReady(t *testing.T) {
	b := forgeBlock(512, tpStatusKernel, threeFrames()[:1])
	if BlockReady(b) || BlockReady(b[:20]) {
		t.Fatal("a kernel-owned or short block reads as ready")
	}
	ne.PutUint32(b[8:], tpStatusUser)
	if !BlockReady(b) {
		t.Fatal("a user-owned block reads as not ready")
	}
}

// TestRingBlockForged corrupts one kernel-written field at a time: every
// walk ends in the named fault, with the frames before the corruption
// delivered and nothing read outside the block.
func TestRingBlockForged(t *testing.T) {
	const size = 4096
	good := func() []byte { return forgeBlock(size, tpStatusUser, threeFrames()) }
	second := func(b []byte) int { return blockHdrLen + int(ne.Uint32(b[blockHdrLen:])) }
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		frames int
		fault  Fault
	}{
		{"shorter than its header", func(b []byte) []byte { return b[:blockHdrLen-1] }, 0, FaultShortBlock},
		{"empty slice", func(b []byte) []byte { return nil }, 0, FaultShortBlock},
		{"status the kernel never sets", func(b []byte) []byte { ne.PutUint32(b[8:], tpStatusUser|0x100); return b }, 0, FaultBadStatus},
		{"status all ones", func(b []byte) []byte { ne.PutUint32(b[8:], ^uint32(0)); return b }, 0, FaultBadStatus},
		{"still the kernel's", func(b []byte) []byte { ne.PutUint32(b[8:], tpStatusKernel); return b }, 0, FaultBadStatus},
		{"zero frame count", func(b []byte) []byte { ne.PutUint32(b[12:], 0); return b }, 0, FaultNoFrames},
		{"frame count past what fits", func(b []byte) []byte { ne.PutUint32(b[12:], 1<<31); return b }, 0, FaultFramePastBlock},
		{"frame count one too many", func(b []byte) []byte { ne.PutUint32(b[12:], 4); return b }, 2, FaultBadNextOffset},
		{"blk_len past the block", func(b []byte) []byte { ne.PutUint32(b[20:], size+1); return b }, 0, FaultBadBlockLen},
		{"blk_len inside the header", func(b []byte) []byte { ne.PutUint32(b[20:], 10); return b }, 0, FaultBadBlockLen},
		{"blk_len cuts the last frame", func(b []byte) []byte { ne.PutUint32(b[20:], ne.Uint32(b[20:])-100); return b }, 2, FaultSnaplenPastBlock},
		{"first offset inside the header", func(b []byte) []byte { ne.PutUint32(b[16:], 8); return b }, 0, FaultBadFirstOffset},
		{"first offset past the block", func(b []byte) []byte { ne.PutUint32(b[16:], 0xfffffff0); return b }, 0, FaultBadFirstOffset},
		{"first offset at the last bytes", func(b []byte) []byte { ne.PutUint32(b[16:], ne.Uint32(b[20:])-8); return b }, 0, FaultBadFirstOffset},
		{"next offset zero mid-block", func(b []byte) []byte { ne.PutUint32(b[blockHdrLen:], 0); return b }, 0, FaultBadNextOffset},
		{"next offset past the block", func(b []byte) []byte { ne.PutUint32(b[blockHdrLen:], 0xfffffff8); return b }, 0, FaultBadNextOffset},
		{"next offset unaligned", func(b []byte) []byte { ne.PutUint32(b[blockHdrLen:], 131); return b }, 0, FaultBadNextOffset},
		{"next offset shorter than a header", func(b []byte) []byte { ne.PutUint32(b[blockHdrLen:], 8); return b }, 0, FaultBadNextOffset},
		{"mac inside the frame header", func(b []byte) []byte { ne.PutUint16(b[blockHdrLen+24:], 10); return b }, 0, FaultBadMac},
		{"mac past the block", func(b []byte) []byte { ne.PutUint16(b[second(b)+24:], 0xffff); return b }, 1, FaultBadMac},
		{"snaplen past the block", func(b []byte) []byte { ne.PutUint32(b[second(b)+12:], 0xffffffff); return b }, 1, FaultSnaplenPastBlock},
		{"snaplen into the next frame", func(b []byte) []byte {
			ne.PutUint32(b[blockHdrLen+12:], 200)
			ne.PutUint32(b[blockHdrLen+16:], 200)
			return b
		}, 0, FaultSnaplenPastBlock},
		{"snaplen over wire length", func(b []byte) []byte { ne.PutUint32(b[blockHdrLen+16:], 1); return b }, 0, FaultSnaplenPastBlock},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(good())
			got, fault := walk(b)
			if len(got) != c.frames || fault != c.fault {
				t.Fatalf("%d frames, fault %v; want %d, %v", len(got), fault, c.frames, c.fault)
			}
			// Once stopped, the walker stays stopped.
			blk := ParseBlock(b)
			for range 10 {
				blk.Next()
			}
			if _, ok := blk.Next(); ok {
				t.Fatal("Next returned a frame after the end")
			}
		})
	}
}

func TestFaultNames(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range Faults() {
		n := f.String()
		if n == "" || seen[n] || n == FaultNone.String() {
			t.Fatalf("fault %d named %q", f, n)
		}
		seen[n] = true
	}
	if len(seen) != int(NumFaults)-1 || NumFaults.String() != fmt.Sprintf("fault(%d)", NumFaults) {
		t.Fatal(len(seen), NumFaults.String())
	}
}

// FuzzRingBlock walks arbitrary bytes as a block: no panic, no frame
// outside the block, never more frames than the block claims, and a
// walk that ends either cleanly with every claimed frame or with a fault.
func FuzzRingBlock(f *testing.F) {
	f.Add(forgeBlock(4096, tpStatusUser, threeFrames()))
	f.Add(forgeBlock(256, tpStatusUser|tpStatusBlkTmo, threeFrames()[1:2]))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		blk := ParseBlock(b)
		n := 0
		for {
			fr, ok := blk.Next()
			if !ok {
				break
			}
			n++
			if len(fr.Data) > len(b) || uint32(len(fr.Data)) > fr.WireLen {
				t.Fatalf("frame of %d bytes (wire %d) from a block of %d", len(fr.Data), fr.WireLen, len(b))
			}
			if n > len(b)/minFrameLen+1 {
				t.Fatalf("%d frames from %d bytes", n, len(b))
			}
		}
		if uint32(n) > blk.Frames {
			t.Fatalf("%d frames, block claims %d", n, blk.Frames)
		}
		if blk.Fault() == FaultNone && uint32(n) != blk.Frames {
			t.Fatalf("clean end after %d of %d frames", n, blk.Frames)
		}
		if blk.Fault() >= NumFaults {
			t.Fatalf("fault %d", blk.Fault())
		}
	})
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzRingBlock from the forged blocks")

// TestFuzzSeeds checks that the committed seed corpus of FuzzRingBlock is
// the forged blocks below (-update-seeds rewrites it), so the fuzz target
// starts from every kind of corruption.
func TestFuzzSeeds(t *testing.T) {
	good := func() []byte { return forgeBlock(1024, tpStatusUser, threeFrames()[:2]) }
	seeds := map[string][]byte{"well-formed": good()}
	corrupt := func(name string, f func(b []byte)) {
		b := good()
		f(b)
		seeds[name] = b
	}
	corrupt("zero-frames", func(b []byte) { ne.PutUint32(b[12:], 0) })
	corrupt("unknown-status", func(b []byte) { ne.PutUint32(b[8:], 0x81) })
	corrupt("first-offset-past-block", func(b []byte) { ne.PutUint32(b[16:], 0xfffffff0) })
	corrupt("next-offset-past-block", func(b []byte) { ne.PutUint32(b[blockHdrLen:], 0xfffffff8) })
	corrupt("snaplen-past-block", func(b []byte) { ne.PutUint32(b[blockHdrLen+12:], 0xffffffff) })
	corrupt("mac-past-block", func(b []byte) { ne.PutUint16(b[blockHdrLen+24:], 0xffff) })
	corrupt("block-len-past-block", func(b []byte) { ne.PutUint32(b[20:], 1<<20) })

	dir := filepath.Join("testdata", "fuzz", "FuzzRingBlock")
	for name, b := range seeds {
		body := []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b))
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, body, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed %s: %v (run with -update-seeds)", name, err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("seed %s differs from the forged block (run with -update-seeds)", name)
		}
	}
}
