package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// A chunk is one element of a layout v2 list: the records of one write that
// share a bucket second, a source shard, a destination and an address
// family, with what they share written once.
//
//	flags    uint8   bits 4..7: chunk format (1); bit 0: addresses are IPv6
//	                 (16 bytes) instead of IPv4 (4 bytes); bit 1: entries carry a key
//	dst_ip   [4|16]byte
//	dst_port uint16
//	base     zig-zag varint: capture time of the first entry minus the
//	         start of the bucket second, ns (5 bytes for live capture)
//
// followed by entries to the end of the chunk:
//
//	src_ip   IPv4: 4 bytes. IPv6: front-coded, a byte n (0..16) saying how
//	         many leading bytes it shares with the previous entry's source
//	         (the first entry's: with the destination), then the other 16-n
//	src_port uint16
//	ts       zig-zag varint: capture time minus the previous entry's (the
//	         first entry's: minus base, so 0)
//	flags    uvarint TCP flags
//	ip_len   uvarint
//	key      uint8 length + bytes, only with flag bit 1 (length 0: no key)
//
// Integers of fixed size are little-endian. An IPv4 entry of a SYN takes
// 4+2+1..5+1+1 bytes: 9 to 13, against the 25 of a version 1 entry.
const (
	chunkFormat = 1 << 4
	chunkV6     = 1 << 0
	chunkKeys   = 1 << 1
	chunkKnown  = 0xf0 | chunkV6 | chunkKeys
)

// ErrBadChunk reports a layout v2 chunk that does not decode.
var ErrBadChunk = errors.New("malformed record chunk")

// chunkKey is what the records of one chunk share.
type chunkKey struct {
	sec   int64
	shard int // of 1 << bits
	bits  int
	dst   netip.Addr
	port  uint16
	flags byte
}

// chunk is a chunk being built.
type chunk struct {
	key     chunkKey
	buf     []byte
	prev    int64    // capture time of the last entry
	prevSrc [16]byte // IPv6: the last entry's source (first: the destination)
}

// chunkFlags are the flags of the chunk that holds r.
func chunkFlags(r *record.Record) byte {
	f := byte(chunkFormat)
	if r.Src.Is6() || r.Dst.Is6() {
		f |= chunkV6
	}
	if r.Key != "" {
		f |= chunkKeys
	}
	return f
}

// start writes c's header for the first record r.
func (c *chunk) start(r *record.Record) {
	c.buf = append(c.buf[:0], c.key.flags)
	c.buf = appendAddr(c.buf, c.key.dst, c.key.flags&chunkV6 != 0)
	c.buf = binary.LittleEndian.AppendUint16(c.buf, c.key.port)
	c.buf = binary.AppendVarint(c.buf, r.TS-c.key.sec*int64(time.Second))
	c.prev = r.TS
	c.prevSrc = c.key.dst.As16()
}

// add appends r's entry to c.
func (c *chunk) add(r *record.Record) {
	if c.key.flags&chunkV6 != 0 {
		src := r.Src.As16()
		n := 0
		for n < 16 && src[n] == c.prevSrc[n] {
			n++
		}
		c.buf = append(c.buf, byte(n))
		c.buf = append(c.buf, src[n:]...)
		c.prevSrc = src
	} else {
		c.buf = appendAddr(c.buf, r.Src, false)
	}
	c.buf = binary.LittleEndian.AppendUint16(c.buf, r.SrcPort)
	c.buf = binary.AppendVarint(c.buf, r.TS-c.prev)
	c.prev = r.TS
	c.buf = binary.AppendUvarint(c.buf, uint64(r.Flags))
	c.buf = binary.AppendUvarint(c.buf, uint64(r.IPLen))
	if c.key.flags&chunkKeys != 0 {
		key := r.Key
		if len(key) > record.MaxKeyLen {
			key = key[:record.MaxKeyLen]
		}
		c.buf = append(c.buf, byte(len(key)))
		c.buf = append(c.buf, key...)
	}
}

func appendAddr(dst []byte, a netip.Addr, v6 bool) []byte {
	if v6 {
		b := a.As16()
		return append(dst, b[:]...)
	}
	b := a.As4()
	return append(dst, b[:]...)
}

// DecodeChunk decodes a layout v2 chunk of bucket second sec, calling fn
// for each record. A
// malformed chunk stops at its first bad entry with an error saying where;
// the records before it were passed to fn. match, when not nil, is asked
// first about the chunk's destination: false skips the chunk unread.
func DecodeChunk(b []byte, sec int64, match func(dst netip.Addr, port uint16) bool, fn func(*record.Record)) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: empty", ErrBadChunk)
	}
	flags := b[0]
	if flags&0xf0 != chunkFormat || flags&^chunkKnown != 0 {
		return fmt.Errorf("%w: flags 0x%02x", ErrBadChunk, flags)
	}
	alen := 4
	if flags&chunkV6 != 0 {
		alen = 16
	}
	if len(b) < 1+alen+2+1 {
		return fmt.Errorf("%w: header of %d bytes", ErrBadChunk, len(b))
	}
	var r record.Record
	r.Dst = addrAt(b[1:], alen)
	r.DstPort = binary.LittleEndian.Uint16(b[1+alen:])
	if match != nil && !match(r.Dst, r.DstPort) {
		return nil
	}
	base, n := binary.Varint(b[3+alen:])
	if n <= 0 {
		return fmt.Errorf("%w: bad base time", ErrBadChunk)
	}
	ts := sec*int64(time.Second) + base
	prevSrc := r.Dst.As16()
	for p := 3 + alen + n; p < len(b); {
		n, err := decodeChunkEntry(b[p:], flags, &prevSrc, &ts, &r)
		if err != nil {
			return fmt.Errorf("%w: entry at byte %d: %v", ErrBadChunk, p, err)
		}
		fn(&r)
		p += n
	}
	return nil
}

func addrAt(b []byte, alen int) netip.Addr {
	if alen == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16])).Unmap()
}

var errShort = errors.New("cut short")

// decodeChunkEntry decodes one entry into r (whose destination is set)
// and returns its length. prevSrc is the previous IPv6 source.
func decodeChunkEntry(b []byte, flags byte, prevSrc *[16]byte, ts *int64, r *record.Record) (int, error) {
	p := 4
	if flags&chunkV6 != 0 {
		if len(b) < 1 || b[0] > 16 || len(b) < 1+16-int(b[0]) {
			return 0, errors.New("bad or cut source address")
		}
		n := int(b[0])
		copy(prevSrc[n:], b[1:1+16-n])
		r.Src = netip.AddrFrom16(*prevSrc).Unmap()
		p = 1 + 16 - n
	} else {
		if len(b) < 4 {
			return 0, errShort
		}
		r.Src = netip.AddrFrom4([4]byte(b[:4]))
	}
	if len(b) < p+2 {
		return 0, errShort
	}
	r.SrcPort = binary.LittleEndian.Uint16(b[p:])
	p += 2
	d, n := binary.Varint(b[p:])
	if n <= 0 {
		return 0, errors.New("bad time delta")
	}
	p += n
	*ts += d
	r.TS = *ts
	fl, n := binary.Uvarint(b[p:])
	if n <= 0 || fl > 0xffff {
		return 0, errors.New("bad tcp flags")
	}
	p += n
	r.Flags = uint16(fl)
	il, n := binary.Uvarint(b[p:])
	if n <= 0 || il > 0xffffffff {
		return 0, errors.New("bad ip length")
	}
	p += n
	r.IPLen = uint32(il)
	r.Key = ""
	if flags&chunkKeys != 0 {
		if p >= len(b) {
			return 0, errShort
		}
		kl := int(b[p])
		p++
		if len(b) < p+kl {
			return 0, errShort
		}
		r.Key = string(b[p : p+kl])
		p += kl
	}
	return p, nil
}
