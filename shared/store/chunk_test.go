package store

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/connpipe/connpipe/shared/record"
)

func randomRecord(rng *rand.Rand, ts int64, v6, key bool) record.Record {
	r := record.Record{TS: ts, SrcPort: uint16(rng.Uint32()), DstPort: 7000,
		Flags: uint16(rng.Uint32N(0x200)), IPLen: rng.Uint32N(200000)}
	var a4 [4]byte
	a4[0], a4[1], a4[2], a4[3] = 10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())
	r.Src, r.Dst = netip.AddrFrom4(a4), netip.MustParseAddr("192.0.2.1")
	if v6 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8}
		for i := 4 + rng.IntN(13); i < 16; i++ { // some share a long prefix, some little
			a[i] = byte(rng.Uint32())
		}
		r.Src = netip.AddrFrom16(a)
	}
	if key {
		r.Key = "k" + string(rune('a'+rng.IntN(26)))
	}
	return r
}

// Every field survives a chunk: times going back and forth, lengths past
// 16 bits, IPv6 (and a mixed pair, read back unmapped), keys.
func TestChunkRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ v6, key bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		var want []record.Record
		ts := int64(1_700_000_000_000_000_000)
		for range 500 {
			ts += rng.Int64N(3_000_000) - 1_000_000
			want = append(want, randomRecord(rng, ts, tc.v6, tc.key))
		}
		want[3].IPLen = 70040
		c := chunk{key: chunkKeyOf(1, &want[0], 5)}
		c.start(&want[0])
		for i := range want {
			want[i].Dst = want[0].Dst
			if chunkKeyOf(1, &want[i], 5).flags != c.key.flags {
				t.Fatalf("record %d would go to another chunk", i)
			}
			c.add(&want[i])
		}
		var got []record.Record
		if err := DecodeChunk(c.buf, 1, nil, func(r *record.Record) { got = append(got, *r) }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("v6=%v key=%v: %d records back, want %d", tc.v6, tc.key, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("v6=%v key=%v record %d: got %v want %v", tc.v6, tc.key, i, got[i], want[i])
			}
		}
	}
}

// An IPv4 entry of everyday traffic (flags under 0x80, a length under 16
// KiB, packets under 2 ms apart) takes at most 13 bytes.
func TestChunkEntrySize(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	ts := int64(1_700_000_000_000_000_000)
	r := randomRecord(rng, ts, false, false)
	c := chunk{key: chunkKeyOf(1, &r, 5)}
	c.start(&r)
	const n = 1000
	for range n {
		r.TS += rng.Int64N(2_000_000)
		r.Flags, r.IPLen = uint16(rng.Uint32N(0x80)), 40+rng.Uint32N(16000)
		c.add(&r)
	}
	if per := float64(len(c.buf)-16) / n; per > 13 {
		t.Fatalf("IPv4 entries take %.2f bytes, want at most 13", per)
	}
}

// A chunk whose destination does not match is skipped unread.
func TestChunkSkippedByDestination(t *testing.T) {
	r := randomRecord(rand.New(rand.NewPCG(3, 4)), 5, false, false)
	c := chunk{key: chunkKeyOf(1, &r, 5)}
	c.start(&r)
	c.add(&r)
	n := 0
	err := DecodeChunk(c.buf, 1, func(dst netip.Addr, _ uint16) bool { return dst != r.Dst }, func(*record.Record) { n++ })
	if err != nil || n != 0 {
		t.Fatalf("skipped chunk gave %d records, err %v", n, err)
	}
}

// Hostile chunks give an error naming the problem, never a panic.
func TestChunkRejectsBadInput(t *testing.T) {
	r := randomRecord(rand.New(rand.NewPCG(5, 6)), 5, false, true)
	c := chunk{key: chunkKeyOf(1, &r, 5)}
	c.start(&r)
	c.add(&r)
	good := c.buf
	for name, b := range map[string][]byte{
		"empty":         {},
		"unknown flags": append([]byte{0x28}, good[1:]...),
		"cut header":    good[:8],
		"cut entry":     good[:len(good)-1],
		"bad varint":    append(append([]byte{}, good[:len(good)-8]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
	} {
		err := DecodeChunk(b, 1, nil, func(*record.Record) {})
		if !errors.Is(err, ErrBadChunk) {
			t.Errorf("%s: got %v, want ErrBadChunk", name, err)
		}
	}
}

func FuzzDecodeChunk(f *testing.F) {
	r := randomRecord(rand.New(rand.NewPCG(7, 8)), 5, true, true)
	c := chunk{key: chunkKeyOf(1, &r, 5)}
	c.start(&r)
	c.add(&r)
	f.Add(c.buf)
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		_ = DecodeChunk(b, 1, nil, func(*record.Record) { n++ })
		if n > len(b) {
			t.Fatalf("%d records out of %d bytes", n, len(b))
		}
	})
}

// chunkKeyOf is the key of the chunk of r in second sec split 1 << bits ways.
func chunkKeyOf(sec int64, r *record.Record, bits int) chunkKey {
	return chunkKey{sec: sec, shard: Shard(r.Src, bits), bits: bits, dst: r.Dst, port: r.DstPort, flags: chunkFlags(r)}
}
