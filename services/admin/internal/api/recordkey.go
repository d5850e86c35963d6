package api

import (
	"context"
	"errors"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/hashring"
	"github.com/redis/go-redis/v9"
)

// recordKeyOwner is the backend that owns a payload key (a records query's
// ?key=): the consumers route a record with a key by the key's hash
// (hashring.WithRecordKey), so its owner is hashOwner's. ok is false when
// every backend must be asked (weighted without stickiness, or the stick
// home unreadable).
func (a *API) recordKeyOwner(ctx context.Context, t *control.Table, key string) (owner control.Backend, ok bool) {
	return a.hashOwner(ctx, t, hashring.HashRecordKey(key))
}

// hashOwner is the backend that owns key hash h: the stick table's entry
// when the table is sticky, else, in mode hash, the ring's choice. ok is
// false when every backend must be asked.
func (a *API) hashOwner(ctx context.Context, t *control.Table, h uint64) (owner control.Backend, ok bool) {
	if len(t.Backends) == 0 {
		return owner, false
	}
	if t.Sticky && a.cfg.Redis != nil {
		home := t.Backends[0]
		lctx, cancel := context.WithTimeout(ctx, backendTimeout)
		name, err := a.cfg.Redis(home.Addr).Get(lctx, hashring.StickKey(a.cfg.Records.Layout.Prefix, t.Key(), h)).Result()
		cancel()
		switch {
		case err == nil:
			return t.Backend(name)
		case !errors.Is(err, redis.Nil):
			return owner, false // stick home unreadable: ask everyone
		}
	}
	if t.RoutingMode() != control.ModeHash {
		return owner, false
	}
	ring, err := hashring.NewRing(t)
	if err != nil {
		return owner, false
	}
	return t.Backends[ring.Pick(h)], true
}
