// Package record defines the connpipe record — one TCP packet sent to a
// listening address — and its two wire forms: the compact binary batch that
// capture publishes, and the JSON form that any AMQP client may publish by hand.
//
// # Binary batch, version 2 (content type application/vnd.connpipe.records.v2)
//
// All integers are little-endian.
//
//	header (44 bytes):
//	  magic    [4]byte  "CPRB"
//	  version  uint8    2
//	  flags    uint8    bit 0: producer and seq identify the batch
//	  reserved [2]byte  0
//	  count    uint32   number of entries that follow
//	  ingest   int64    when the batch entered the pipeline, Unix nanoseconds
//	  producer uint64   the identity of the capture process that made it
//	  seq      uint64   the batch's sequence number within its producer
//	  first    uint64   how many records the producer made before this batch
//
// The header is followed by count entries. An entry is:
//
//	kind     uint8   bit 0: addresses are IPv6 (16 bytes) instead of IPv4 (4 bytes)
//	                 bit 1: a key follows the fixed part
//	ts_ns    int64   capture time, Unix nanoseconds
//	src_ip   [4|16]byte
//	dst_ip   [4|16]byte
//	src_port uint16
//	dst_port uint16
//	flags    uint16  TCP flags (FIN=0x01 … NS=0x100)
//	ip_len   uint32  IPv4 total length, or IPv6 payload length + 40
//	key      uint8 length + bytes, only when kind bit 1 is set
//
// (producer, seq) names a batch wherever it travels: a second delivery of
// it (a redelivery, a republish after a lost confirm, the spool after a
// restart) is recognised by the consumer and stored once (package store).
// first places each record in its producer's stream, which is what mode
// "weighted" routes by, so a second delivery of a record goes where the
// first went.
//
// Version 1 (content type application/vnd.connpipe.records.v1) has a
// 20-byte header without producer and seq, and a 16-bit ip_len; it is still
// decoded, so captures can be upgraded after the consumers.
//
// The retention window of a record counts from max(ts_ns, ingest), but
// never from later than when the consumer received it: for live capture that
// is the capture time; a replayed old capture stays readable for the
// retention window after the replay; a record stamped in the future (or a
// batch whose ingest time is) counts from its receipt (see store.Bucket).
//
// The version 1 entry (25 bytes for IPv4 without a key, ip_len capped at
// 65,535) is also the entry of store layout v1.
package record

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Record is one TCP packet.
type Record struct {
	TS      int64 // capture time, Unix nanoseconds
	Src     netip.Addr
	Dst     netip.Addr
	SrcPort uint16
	DstPort uint16
	Flags   uint16 // TCP flags
	IPLen   uint32 // IPv4 total length (big TCP: the real length), or IPv6 payload length + 40 (jumbograms: the jumbo length + 40)
	Key     string // optional routing key taken from the payload; at most 255 bytes
}

// TCP flag bits as they appear in Record.Flags.
const (
	FlagFIN uint16 = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
	FlagNS
)

// MaxKeyLen is the longest key an entry can carry.
const MaxKeyLen = 255

// String renders the record in the documented text form used by
// `capture -print` and `admin records`: tab-separated
//
//	ts_ns src_ip dst_ip src_port dst_port tcp_flags ip_len [key]
//
// with tcp_flags as 0x%04x. The first seven columns match the truth files
// that tshark produces for the sample captures.
func (r Record) String() string {
	var b strings.Builder
	b.Grow(96)
	b.WriteString(strconv.FormatInt(r.TS, 10))
	b.WriteByte('\t')
	b.WriteString(r.Src.String())
	b.WriteByte('\t')
	b.WriteString(r.Dst.String())
	b.WriteByte('\t')
	b.WriteString(strconv.Itoa(int(r.SrcPort)))
	b.WriteByte('\t')
	b.WriteString(strconv.Itoa(int(r.DstPort)))
	b.WriteByte('\t')
	fmt.Fprintf(&b, "0x%04x", r.Flags)
	b.WriteByte('\t')
	b.WriteString(strconv.Itoa(int(r.IPLen)))
	if r.Key != "" {
		b.WriteByte('\t')
		b.WriteString(r.Key)
	}
	return b.String()
}
