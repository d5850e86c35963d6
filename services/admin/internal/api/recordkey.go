package api

import (
	"context"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/routing"
)

// recordKeyOwner is the backend that owns a payload key (a records query's
// ?key=): the consumers route a record with a key by the key's hash
// (routing.WithRecordKey), so its owner is hashOwner's. ok is false when
// every backend must be asked (weighted without stickiness, or the stick
// home unreadable).
func (a *API) recordKeyOwner(ctx context.Context, t *control.Table, key string) (owner control.Backend, ok bool) {
	return a.hashOwner(ctx, t, routing.HashRecordKey(key))
}

// hashOwner is the backend that owns key hash h, as package routing
// answers it (routing.Owner). ok is false when every backend must be
// asked.
func (a *API) hashOwner(ctx context.Context, t *control.Table, h uint64) (owner control.Backend, ok bool) {
	lctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	return routing.Owner(lctx, t, a.cfg.Records.Layout, a.cfg.Redis, h)
}
