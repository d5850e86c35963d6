package routing

import (
	"github.com/cespare/xxhash/v2"
	"github.com/connpipe/connpipe/shared/record"
)

// recordKeySalt separates the hashes of payload keys from those of
// addresses, so that a key's stick entry never meets an address's.
const recordKeySalt = 0x6b65792d70617931 // "key-pay1"

// HashRecordKey hashes a record's payload key (record.Record.Key, set by
// capture's KEY_RULE or by a hand-published JSON record).
func HashRecordKey(key string) uint64 {
	return mix(xxhash.Sum64String(key) ^ recordKeySalt)
}

// WithRecordKey routes a record by its payload key when it has one, and by
// f (the table's hash key: source IP by default) when it has none. The
// stick table is keyed by the same hash.
func WithRecordKey(f KeyFunc) KeyFunc {
	return func(r *record.Record) uint64 {
		if r.Key != "" {
			return HashRecordKey(r.Key)
		}
		return f(r)
	}
}
