package routing

import (
	"fmt"
	"net/netip"

	"github.com/cespare/xxhash/v2"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
)

// KeyFunc derives the hash of a record's routing key.
type KeyFunc func(r *record.Record) uint64

// KeyFor returns the key function of a table's hash key: the hash of the
// fields its row of control.HashKeys names, used for records without a
// payload key; a record with one is routed by it (WithRecordKey). The
// zero key means the default, control.KeySrc.
func KeyFor(k control.HashKey) (KeyFunc, error) {
	if k != "" {
		if _, err := control.ParseHashKey(string(k)); err != nil {
			return nil, err
		}
	}
	f := k.Info().Fields
	if f == 0 {
		return nil, fmt.Errorf("%w: hash key %q hashes no field", control.ErrBadMode, k)
	}
	return WithRecordKey(HashFields(f)), nil
}

// HashFields returns the function that hashes the fields f of a record, in
// the order of control.Fields: each IP as 16 bytes (IPv4 as IPv4-mapped
// IPv6, so a key does not depend on how the address family was recorded),
// then the source and destination port big-endian and the protocol.
func HashFields(f control.Fields) KeyFunc {
	switch f {
	case control.FieldSrc:
		return HashSrc
	case control.FieldDst:
		return HashDst
	case control.FieldSrc | control.FieldDst:
		return HashPair
	case control.FieldSrc | control.FieldDst | control.FieldPorts:
		return HashFlow
	}
	return func(r *record.Record) uint64 { return hashFields(f, r) }
}

// hashFields hashes any set of fields. HashSrc and the others are the
// same sums written out for the sets the table has, with no branch per
// record.
func hashFields(f control.Fields, r *record.Record) uint64 {
	var b [37]byte
	n := 0
	if f&control.FieldSrc != 0 {
		put16(b[n:], r.Src)
		n += 16
	}
	if f&control.FieldDst != 0 {
		put16(b[n:], r.Dst)
		n += 16
	}
	if f&control.FieldPorts != 0 {
		b[n], b[n+1] = byte(r.SrcPort>>8), byte(r.SrcPort)
		b[n+2], b[n+3] = byte(r.DstPort>>8), byte(r.DstPort)
		b[n+4] = protoTCP
		n += 5
	}
	return xxhash.Sum64(b[:n])
}

// protoTCP is the IP protocol number in the flow 5-tuple; connpipe records
// only TCP.
const protoTCP = 6

// put16 writes a as 16 bytes (IPv4 as IPv4-mapped IPv6), so a key does not
// depend on how the address family was recorded.
func put16(dst []byte, a netip.Addr) {
	b := a.As16()
	copy(dst, b[:])
}

// HashSrc hashes the source IP (control.FieldSrc).
func HashSrc(r *record.Record) uint64 {
	var b [16]byte
	put16(b[:], r.Src)
	return xxhash.Sum64(b[:])
}

// HashDst hashes the destination IP (control.FieldDst).
func HashDst(r *record.Record) uint64 {
	var b [16]byte
	put16(b[:], r.Dst)
	return xxhash.Sum64(b[:])
}

// HashPair hashes source and destination IP.
func HashPair(r *record.Record) uint64 {
	var b [32]byte
	put16(b[0:], r.Src)
	put16(b[16:], r.Dst)
	return xxhash.Sum64(b[:])
}

// HashFlow hashes the 5-tuple: source and destination IP and port, protocol.
func HashFlow(r *record.Record) uint64 {
	var b [37]byte
	put16(b[0:], r.Src)
	put16(b[16:], r.Dst)
	b[32], b[33] = byte(r.SrcPort>>8), byte(r.SrcPort)
	b[34], b[35] = byte(r.DstPort>>8), byte(r.DstPort)
	b[36] = protoTCP
	return xxhash.Sum64(b[:])
}
