package record

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// Content types that name the wire form of a records message.
const (
	ContentTypeBinary   = "application/vnd.connpipe.records.v2"
	ContentTypeBinaryV1 = "application/vnd.connpipe.records.v1"
	ContentTypeJSON     = "application/json"
	// VersionHeader is the AMQP header carrying the format version.
	VersionHeader = "x-connpipe-version"
	Version       = 2
)

const (
	magic       = "CPRB"
	headerLenV1 = 20
	headerLenV2 = 44
	flagHasID   = 1 << 0
	kindIPv6    = 1 << 0
	kindHasKey  = 1 << 1
	fixedV4     = 1 + 8 + 4 + 4 + 8
	fixedV6     = 1 + 8 + 16 + 16 + 8
	// MaxBatch bounds the count a batch header may claim, so a hostile
	// header cannot make a decoder allocate gigabytes.
	MaxBatch = 1 << 20
	// MaxIPLen16 is the largest ip_len a version 1 entry holds; longer
	// lengths are stored as this.
	MaxIPLen16 = 0xffff
)

// Errors returned by the decoders; wrap-checked with errors.Is.
var (
	ErrBadMagic   = errors.New("not a connpipe record batch (bad magic)")
	ErrVersion    = errors.New("unsupported record batch version")
	ErrTruncated  = errors.New("record data truncated")
	ErrBadEntry   = errors.New("malformed record entry")
	ErrTooLarge   = errors.New("record batch too large")
	ErrBadJSON    = errors.New("malformed JSON record")
	ErrNoRecords  = errors.New("message holds no records")
	ErrContentTyp = errors.New("unknown content type")
)

// EntrySize is the number of bytes AppendEntry writes for r.
func EntrySize(r *Record) int {
	n := fixedV4
	if r.Src.Is6() || r.Dst.Is6() {
		n = fixedV6
	}
	if r.Key != "" {
		n += 1 + len(r.Key)
	}
	return n
}

// AppendEntry appends the version 1 entry of r to dst (the entry of store
// layout v1): ip_len is capped at MaxIPLen16. Addresses of mixed families
// are both written as IPv6 (IPv4-mapped). A key longer than MaxKeyLen is
// cut to MaxKeyLen bytes.
func AppendEntry(dst []byte, r *Record) []byte { return appendEntry(dst, r, false) }

func appendEntry(dst []byte, r *Record, wide bool) []byte {
	var kind byte
	v6 := r.Src.Is6() || r.Dst.Is6()
	if v6 {
		kind |= kindIPv6
	}
	key := r.Key
	if len(key) > MaxKeyLen {
		key = key[:MaxKeyLen]
	}
	if key != "" {
		kind |= kindHasKey
	}
	dst = append(dst, kind)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.TS))
	if v6 {
		s, d := r.Src.As16(), r.Dst.As16()
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
	} else {
		s, d := r.Src.As4(), r.Dst.As4()
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
	}
	dst = binary.LittleEndian.AppendUint16(dst, r.SrcPort)
	dst = binary.LittleEndian.AppendUint16(dst, r.DstPort)
	dst = binary.LittleEndian.AppendUint16(dst, r.Flags)
	if wide {
		dst = binary.LittleEndian.AppendUint32(dst, r.IPLen)
	} else {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(min(r.IPLen, MaxIPLen16)))
	}
	if key != "" {
		dst = append(dst, byte(len(key)))
		dst = append(dst, key...)
	}
	return dst
}

// DecodeEntry decodes the version 1 entry at the start of b into r and
// returns the number of bytes it used.
func DecodeEntry(b []byte, r *Record) (int, error) { return decodeEntry(b, r, false) }

func decodeEntry(b []byte, r *Record, wide bool) (int, error) {
	if len(b) < 1 {
		return 0, ErrTruncated
	}
	kind := b[0]
	if kind&^(kindIPv6|kindHasKey) != 0 {
		return 0, fmt.Errorf("%w: kind byte 0x%02x", ErrBadEntry, kind)
	}
	n := fixedV4
	if kind&kindIPv6 != 0 {
		n = fixedV6
	}
	if wide {
		n += 2
	}
	if len(b) < n {
		return 0, ErrTruncated
	}
	r.TS = int64(binary.LittleEndian.Uint64(b[1:9]))
	p := 9
	if kind&kindIPv6 != 0 {
		r.Src = netip.AddrFrom16([16]byte(b[p : p+16])).Unmap()
		r.Dst = netip.AddrFrom16([16]byte(b[p+16 : p+32])).Unmap()
		p += 32
	} else {
		r.Src = netip.AddrFrom4([4]byte(b[p : p+4]))
		r.Dst = netip.AddrFrom4([4]byte(b[p+4 : p+8]))
		p += 8
	}
	r.SrcPort = binary.LittleEndian.Uint16(b[p:])
	r.DstPort = binary.LittleEndian.Uint16(b[p+2:])
	r.Flags = binary.LittleEndian.Uint16(b[p+4:])
	if wide {
		r.IPLen = binary.LittleEndian.Uint32(b[p+6:])
		p += 10
	} else {
		r.IPLen = uint32(binary.LittleEndian.Uint16(b[p+6:]))
		p += 8
	}
	r.Key = ""
	if kind&kindHasKey != 0 {
		if len(b) < p+1 {
			return 0, ErrTruncated
		}
		kl := int(b[p])
		p++
		if kl == 0 || len(b) < p+kl {
			return 0, fmt.Errorf("%w: key length %d", ErrBadEntry, kl)
		}
		r.Key = string(b[p : p+kl])
		p += kl
	}
	return p, nil
}

// DecodeEntries decodes a concatenation of version 1 entries (the form of
// store layout v1), calling fn for each. It stops at the first malformed
// entry and returns its error together with the offset where it sits.
func DecodeEntries(b []byte, fn func(*Record)) error {
	var r Record
	for off := 0; off < len(b); {
		n, err := DecodeEntry(b[off:], &r)
		if err != nil {
			return fmt.Errorf("entry at byte %d: %w", off, err)
		}
		fn(&r)
		off += n
	}
	return nil
}

// ID names a batch: the capture process that made it and its sequence
// number there. The zero ID names nothing (hand-published JSON, version 1
// batches).
type ID struct {
	Producer, Seq uint64
}

// IsZero reports whether id names no batch.
func (id ID) IsZero() bool { return id == ID{} }

// Batch is a decoded records message.
type Batch struct {
	Ingest int64 // Unix ns when the batch entered the pipeline; 0 if unknown
	// Received is Unix ns when the consumer received the message (0 if
	// unknown). No record is stored in a bucket after it: see store.Bucket.
	Received int64
	// ID identifies the batch (zero when the message carries none).
	ID ID
	// First is the number of records its producer made before this
	// batch: record i of the batch is record First+i of the producer's
	// stream, which is where mode "weighted" routes it (package routing).
	First   uint64
	Records []Record
}

// Encoder builds binary batches (version 2); reuse one to avoid
// allocations.
type Encoder struct {
	buf   []byte
	count uint32
}

// Reset starts a new batch that entered the pipeline at ingest (Unix ns),
// with no identity.
func (e *Encoder) Reset(ingest int64) { e.ResetID(ingest, ID{}, 0) }

// ResetID starts a new batch that entered the pipeline at ingest (Unix ns),
// named id, whose first record is record first of its producer's stream.
func (e *Encoder) ResetID(ingest int64, id ID, first uint64) {
	e.buf = append(e.buf[:0], magic...)
	var flags byte
	if !id.IsZero() {
		flags |= flagHasID
	}
	e.buf = append(e.buf, Version, flags, 0, 0)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, 0)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, uint64(ingest))
	e.buf = binary.LittleEndian.AppendUint64(e.buf, id.Producer)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, id.Seq)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, first)
	e.count = 0
}

// Add appends a record to the batch.
func (e *Encoder) Add(r *Record) {
	if len(e.buf) == 0 {
		e.Reset(0)
	}
	e.buf = appendEntry(e.buf, r, true)
	e.count++
}

// Len is the number of records added since Reset.
func (e *Encoder) Len() int { return int(e.count) }

// Bytes returns the finished batch. The slice is valid until the next Reset.
func (e *Encoder) Bytes() []byte {
	if len(e.buf) == 0 {
		e.Reset(0)
	}
	binary.LittleEndian.PutUint32(e.buf[8:12], e.count)
	return e.buf
}

// AppendBatchV1 appends a version 1 batch of recs (ingest time ingest) to
// dst: what a capture from before version 2 publishes.
func AppendBatchV1(dst []byte, ingest int64, recs []Record) []byte {
	dst = append(dst, magic...)
	dst = append(dst, 1, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(recs)))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(ingest))
	for i := range recs {
		dst = AppendEntry(dst, &recs[i])
	}
	return dst
}

// DecodeBinary decodes a binary batch of version 1 or 2, appending its
// records to dst.Records.
func DecodeBinary(b []byte, dst *Batch) error {
	if len(b) < headerLenV1 {
		if len(b) >= 4 && string(b[:4]) != magic {
			return ErrBadMagic
		}
		return fmt.Errorf("header: %w", ErrTruncated)
	}
	if string(b[:4]) != magic {
		return ErrBadMagic
	}
	var wide bool
	hl := headerLenV1
	switch b[4] {
	case 1:
	case 2:
		if len(b) < headerLenV2 {
			return fmt.Errorf("header: %w", ErrTruncated)
		}
		wide, hl = true, headerLenV2
		if b[5]&flagHasID != 0 {
			dst.ID = ID{Producer: binary.LittleEndian.Uint64(b[20:28]), Seq: binary.LittleEndian.Uint64(b[28:36])}
			dst.First = binary.LittleEndian.Uint64(b[36:44])
		}
	default:
		return fmt.Errorf("%w: %d", ErrVersion, b[4])
	}
	count := binary.LittleEndian.Uint32(b[8:12])
	if count > MaxBatch {
		return fmt.Errorf("%w: header claims %d records", ErrTooLarge, count)
	}
	dst.Ingest = int64(binary.LittleEndian.Uint64(b[12:20]))
	body := b[hl:]
	if need := int(count) * fixedV4; len(body) < need {
		return fmt.Errorf("header claims %d records in %d bytes: %w", count, len(body), ErrTruncated)
	}
	var r Record
	off := 0
	for i := uint32(0); i < count; i++ {
		n, err := decodeEntry(body[off:], &r, wide)
		if err != nil {
			return fmt.Errorf("record %d of %d: %w", i, count, err)
		}
		dst.Records = append(dst.Records, r)
		off += n
	}
	if off != len(body) {
		return fmt.Errorf("%w: %d bytes after the last record", ErrBadEntry, len(body)-off)
	}
	return nil
}

// JSON is the hand-publishable form of a record. A message holds one
// object or an array of them.
//
//	{"ts_ns": 1700000000123456789, "src_ip": "10.0.0.7", "dst_ip": "10.0.0.1",
//	 "src_port": 51234, "dst_port": 8080, "tcp_flags": 2, "ip_len": 60, "key": "abc"}
//
// ts_ns, src_ip, dst_ip and the ports are required; tcp_flags, ip_len and
// key are optional. ts_ns may also be given as a string of digits.
type JSON struct {
	TS      json.Number `json:"ts_ns"`
	Src     string      `json:"src_ip"`
	Dst     string      `json:"dst_ip"`
	SrcPort *int        `json:"src_port"`
	DstPort *int        `json:"dst_port"`
	Flags   int         `json:"tcp_flags,omitempty"`
	IPLen   int         `json:"ip_len,omitempty"`
	Key     string      `json:"key,omitempty"`
}

// ToJSON converts r to its JSON form.
func ToJSON(r *Record) JSON {
	sp, dp := int(r.SrcPort), int(r.DstPort)
	return JSON{
		TS: json.Number(strconv.FormatInt(r.TS, 10)), Src: r.Src.String(), Dst: r.Dst.String(),
		SrcPort: &sp, DstPort: &dp, Flags: int(r.Flags), IPLen: int(r.IPLen), Key: r.Key,
	}
}

// Record validates j and converts it.
func (j *JSON) Record() (Record, error) {
	var r Record
	if j.TS == "" {
		return r, fmt.Errorf("%w: ts_ns is missing", ErrBadJSON)
	}
	ts, err := strconv.ParseInt(string(j.TS), 10, 64)
	if err != nil || ts <= 0 {
		return r, fmt.Errorf("%w: ts_ns %q is not a positive integer of Unix nanoseconds", ErrBadJSON, j.TS)
	}
	r.TS = ts
	if r.Src, err = netip.ParseAddr(j.Src); err != nil {
		return r, fmt.Errorf("%w: src_ip %q: not an IP address", ErrBadJSON, j.Src)
	}
	if r.Dst, err = netip.ParseAddr(j.Dst); err != nil {
		return r, fmt.Errorf("%w: dst_ip %q: not an IP address", ErrBadJSON, j.Dst)
	}
	r.Src, r.Dst = r.Src.Unmap().WithZone(""), r.Dst.Unmap().WithZone("")
	if r.SrcPort, err = port("src_port", j.SrcPort); err != nil {
		return r, err
	}
	if r.DstPort, err = port("dst_port", j.DstPort); err != nil {
		return r, err
	}
	if j.Flags < 0 || j.Flags > 0x1ff {
		return r, fmt.Errorf("%w: tcp_flags %d out of range 0..0x1ff", ErrBadJSON, j.Flags)
	}
	if j.IPLen < 0 || j.IPLen > math.MaxUint32 {
		return r, fmt.Errorf("%w: ip_len %d out of range 0..%d", ErrBadJSON, j.IPLen, uint32(math.MaxUint32))
	}
	if len(j.Key) > MaxKeyLen {
		return r, fmt.Errorf("%w: key is %d bytes, at most %d", ErrBadJSON, len(j.Key), MaxKeyLen)
	}
	r.Flags, r.IPLen, r.Key = uint16(j.Flags), uint32(j.IPLen), j.Key
	return r, nil
}

func port(name string, p *int) (uint16, error) {
	if p == nil {
		return 0, fmt.Errorf("%w: %s is missing", ErrBadJSON, name)
	}
	if *p < 0 || *p > 65535 {
		return 0, fmt.Errorf("%w: %s %d out of range 0..65535", ErrBadJSON, name, *p)
	}
	return uint16(*p), nil
}

// MaxJSONRecords bounds the records of one JSON message. JSON is the
// hand-published form; capture's batches are binary.
const MaxJSONRecords = 1 << 16

// DecodeJSON decodes one JSON record or an array of them, appending them
// to dst.Records. It reads the array as a stream, one element at a time,
// and validates each element as it goes: memory grows with the records
// kept, never with the elements of a hostile array, and the first bad
// element or the element past MaxJSONRecords ends the decoding.
func DecodeJSON(b []byte, dst *Batch) error {
	rest := bytes.TrimLeft(b, " \t\r\n")
	if len(rest) == 0 || (rest[0] != '[' && rest[0] != '{') {
		return fmt.Errorf("%w: expected an object or an array", ErrBadJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(rest))
	if rest[0] == '{' {
		if err := decodeOne(dec, 0, dst); err != nil {
			return err
		}
		return end(dec)
	}
	if _, err := dec.Token(); err != nil { // the '['
		return fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	n := 0
	for dec.More() {
		if n == MaxJSONRecords {
			return fmt.Errorf("%w: more than %d JSON records", ErrTooLarge, MaxJSONRecords)
		}
		if err := decodeOne(dec, n, dst); err != nil {
			return err
		}
		n++
	}
	if _, err := dec.Token(); err != nil { // the ']'
		return fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	if err := end(dec); err != nil {
		return err
	}
	if n == 0 {
		return ErrNoRecords
	}
	return nil
}

// decodeOne decodes the next value of dec as record i.
func decodeOne(dec *json.Decoder, i int, dst *Batch) error {
	var j JSON
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("%w: record %d: %v", ErrBadJSON, i, err)
	}
	r, err := j.Record()
	if err != nil {
		return fmt.Errorf("record %d: %w", i, err)
	}
	dst.Records = append(dst.Records, r)
	return nil
}

// end checks that nothing but white space follows the value.
func end(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the top-level value", ErrBadJSON)
	}
	return nil
}

// Decode decodes a message body by its content type. An empty content type
// is taken as binary if the body starts with the magic, else as JSON.
func Decode(contentType string, body []byte, dst *Batch) error {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.TrimSpace(strings.ToLower(ct))
	switch {
	case ct == ContentTypeBinary || ct == ContentTypeBinaryV1:
		return DecodeBinary(body, dst)
	case ct == ContentTypeJSON || ct == "text/json":
		return DecodeJSON(body, dst)
	case ct == "" || ct == "text/plain" || ct == "application/octet-stream":
		if len(body) >= 4 && string(body[:4]) == magic {
			return DecodeBinary(body, dst)
		}
		return DecodeJSON(body, dst)
	}
	return fmt.Errorf("%w %q (want %s or %s)", ErrContentTyp, contentType, ContentTypeBinary, ContentTypeJSON)
}
