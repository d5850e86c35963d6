package routing

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// StickHome is the index in t.Backends of the stick home, the Redis
// instance that holds the stick table: the first backend by name.
// Consumers write the table there and admin reads it there. A table
// without backends has none: -1.
func StickHome(t *control.Table) int {
	home := -1
	for i, b := range t.Backends {
		if home < 0 || b.Name < t.Backends[home].Name {
			home = i
		}
	}
	return home
}

// claimScript: KEYS are stick keys; ARGV[1] the TTL in ms, ARGV[2] the
// table's backend names as ",a,b,", ARGV[2+i] the offer for KEYS[i].
// Returns the owner of every key.
var claimScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and string.find(ARGV[2], ',' .. v .. ',', 1, true) then
    redis.call('PEXPIRE', k, ARGV[1])
  else
    v = ARGV[i + 2]
    redis.call('SET', k, v, 'PX', ARGV[1])
  end
  out[i] = v
end
return out`)

// claimChunk bounds the keys of one script call.
const claimChunk = 512

// ErrShortReply reports a claim answered with the wrong number of owners.
var ErrShortReply = errors.New("stick claim: reply does not match the keys asked")

// Stick is the stick table of one table's hash key on its home instance.
type Stick struct {
	Layout store.Layout
	Kind   control.HashKey // the table's hash key (control.KeySrc …)
	TTL    time.Duration   // of an entry, renewed by every claim
	// Timeout bounds one script call (of at most 512 keys); 0: none
	// beyond ctx.
	Timeout time.Duration
}

// Claim asks the stick home rdb for the owners of key hashes, offering
// offers[j] (a backend name, "" for none) for a key without an owner or
// whose owner is not among backends. Every owner read is renewed for TTL.
// It calls got for each key in order and returns how many it answered:
// all of them, or fewer with the error that stopped it.
func (s Stick) Claim(ctx context.Context, rdb redis.Scripter, backends []control.Backend, hashes []uint64, offers []string, got func(j int, owner string)) (int, error) {
	var names strings.Builder
	names.WriteByte(',')
	for _, b := range backends {
		names.WriteString(b.Name)
		names.WriteByte(',')
	}
	ttl := strconv.FormatInt(s.TTL.Milliseconds(), 10)
	for from := 0; from < len(hashes); from += claimChunk {
		to := min(from+claimChunk, len(hashes))
		keys := make([]string, 0, to-from)
		args := make([]any, 0, to-from+2)
		args = append(args, ttl, names.String())
		for j := from; j < to; j++ {
			keys = append(keys, s.Layout.StickKey(s.Kind.String(), hashes[j]))
			args = append(args, offers[j])
		}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if s.Timeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, s.Timeout)
		}
		owners, err := claimScript.Run(cctx, rdb, keys, args...).StringSlice()
		cancel()
		if err == nil && len(owners) != len(keys) {
			err = ErrShortReply
		}
		if err != nil {
			return from, err
		}
		for j, owner := range owners {
			got(from+j, owner)
		}
	}
	return len(hashes), nil
}

// Owner reads the owner of key hash h from the stick home rdb; ok is false
// when the key has none.
func (s Stick) Owner(ctx context.Context, rdb redis.Cmdable, h uint64) (name string, ok bool, err error) {
	name, err = rdb.Get(ctx, s.Layout.StickKey(s.Kind.String(), h)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	return name, true, nil
}
