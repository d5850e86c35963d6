package keyscan

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"

	"github.com/connpipe/connpipe/shared/record"
)

// A connection's stream: its segments' payloads put in order, and the
// key rule run over what is contiguous.

// TCP flags in byte 13 of the header.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

// feed puts the segment's payload in its place in c's stream and scans
// what became contiguous.
func (s *Scanner) feed(c *conn, seg []byte) {
	if c.result != "" || len(seg) < 20 {
		return
	}
	doff := int(seg[12]>>4) * 4
	if doff < 20 || doff > len(seg) {
		return // options cut by the snapshot: nothing to read in this one
	}
	seq, flags, payload := binary.BigEndian.Uint32(seg[4:8]), seg[13], seg[doff:]
	if !c.hasBase {
		// From the SYN on, or from the first segment seen when the
		// capture began after the handshake.
		c.base, c.hasBase = seq, true
		if flags&tcpSYN != 0 {
			c.base++
		}
	}
	if flags&tcpSYN != 0 {
		seq++ // the SYN takes a sequence number; data after it
	}
	off := int(int32(seq - c.base))
	if flags&tcpFIN != 0 && c.finOff < 0 {
		c.finOff = off + len(payload)
	}
	if flags&tcpRST != 0 {
		c.ended = true
	}
	if off < 0 { // a retransmission reaching back before the stream's start
		if -off >= len(payload) {
			payload = nil
		} else {
			payload, off = payload[-off:], 0
		}
	}
	if room := s.cfg.ScanBytes - off; room <= 0 {
		payload = nil
	} else if len(payload) > room {
		payload = payload[:room]
	}
	if len(payload) > 0 {
		if off <= len(c.buf) {
			c.buf = append(c.buf, payload[len(c.buf)-off:]...)
			s.joinPieces(c)
		} else if c.oooLen+len(payload) <= s.cfg.ScanBytes {
			i, _ := slices.BinarySearchFunc(c.ooo, off, func(p piece, off int) int { return p.off - off })
			c.ooo = slices.Insert(c.ooo, i, piece{off: off, data: append([]byte(nil), payload...)})
			c.oooLen += len(payload)
		}
		// else: more out-of-order bytes than a window; the sender
		// retransmits what counts, and the timeout bounds the wait.
	}
	if c.finOff >= 0 && len(c.buf) >= min(c.finOff, s.cfg.ScanBytes) {
		c.ended = true
	}
	s.scan(c, false, false)
}

// joinPieces appends the out-of-order pieces that the in-order bytes now
// reach.
func (s *Scanner) joinPieces(c *conn) {
	for len(c.ooo) > 0 && c.ooo[0].off <= len(c.buf) {
		p := c.ooo[0]
		if end := p.off + len(p.data); end > len(c.buf) {
			c.buf = append(c.buf, p.data[len(c.buf)-p.off:]...)
		}
		c.oooLen -= len(p.data)
		c.ooo[0] = piece{}
		c.ooo = c.ooo[1:]
	}
	if len(c.ooo) == 0 {
		c.ooo = nil
	}
}

// scan matches the bytes read so far against the rule, unless it can be
// put off (see Cost in the package doc); now scans what is new anyway, and
// final also takes a match that reaches the end of the bytes read (the
// timeout). The stream's end and a full window always settle the
// connection.
func (s *Scanner) scan(c *conn, now, final bool) {
	if c.result != "" {
		return
	}
	full := len(c.buf) >= s.cfg.ScanBytes
	end := c.ended
	fresh := len(c.buf) - c.scanned
	if fresh > 0 && !end && !full && !now && fresh < min(c.scanned, s.overlap) {
		return // put off: Expire scans it at the next tick
	}
	if fresh > 0 {
		from := max(0, c.scanned-s.overlap)
		for n := 0; from > 0 && n < utf8.UTFMax-1 && !utf8.RuneStart(c.buf[from]); n++ {
			from-- // start on a character, as a scan from the start would
		}
		c.pend = [2]int{-1, -1}
		if m := s.cfg.Rule.FindSubmatchIndex(c.buf[from:]); m != nil && m[2] >= 0 && m[3] > m[2] {
			c.pend = [2]int{from + m[2], from + m[3]}
		}
		s.m.BytesScanned.Add(float64(len(c.buf) - from))
		c.scanned = len(c.buf)
	}
	if c.pend[0] >= 0 && (c.pend[1] < len(c.buf) || full || end || final) {
		key := c.buf[c.pend[0]:c.pend[1]]
		if len(key) > record.MaxKeyLen {
			key = key[:record.MaxKeyLen]
		}
		c.key, c.result = string(key), ResultFound
		return
	}
	switch {
	case full:
		c.result = ResultWindow
	case end:
		c.result = ResultNoMatch
	}
}
