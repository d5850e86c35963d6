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

// KeyFor returns the key function named by a table's hash key (control.KeySrc
// …), used for records without a payload key; a record with one is routed
// by it (WithRecordKey). The empty name means control.KeySrc.
func KeyFor(name string) (KeyFunc, error) {
	f, err := fieldKey(name)
	if err != nil {
		return nil, err
	}
	return WithRecordKey(f), nil
}

func fieldKey(name string) (KeyFunc, error) {
	switch name {
	case "", control.KeySrc:
		return HashSrc, nil
	case control.KeyDst:
		return HashDst, nil
	case control.KeyPair:
		return HashPair, nil
	case control.KeyFlow:
		return HashFlow, nil
	}
	return nil, fmt.Errorf("%w: hash key %q", control.ErrBadMode, name)
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

// HashSrc hashes the source IP.
func HashSrc(r *record.Record) uint64 {
	var b [16]byte
	put16(b[:], r.Src)
	return xxhash.Sum64(b[:])
}

// HashDst hashes the destination IP.
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
