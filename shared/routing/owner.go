package routing

import (
	"context"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/redis/go-redis/v9"
)

// Owner is the backend of t that owns key hash h, where a reader finds the
// key's records: the stick table's entry when t is sticky (read from the
// stick home through client), else, in a hashed mode ("hash"), the mode's choice. ok
// is false when every backend must be asked: mode "weighted" without
// stickiness, a sticky key without an entry in mode "weighted", or a stick
// home that cannot be read. With client nil the stick table is not read.
func Owner(ctx context.Context, t *control.Table, layout store.Layout, client func(addr string) redis.Cmdable, h uint64) (owner control.Backend, ok bool) {
	if t == nil || len(t.Backends) == 0 {
		return owner, false
	}
	if t.Sticky && client != nil {
		home := t.Backends[StickHome(t)]
		name, found, err := Stick{Layout: layout, Kind: t.Key()}.Owner(ctx, client(home.Addr), h)
		switch {
		case err != nil:
			return owner, false // stick home unreadable: ask everyone
		case found:
			return t.Backend(name)
		}
	}
	if !t.RoutingMode().Info().Hashed {
		return owner, false
	}
	r, err := NewRoute(t)
	if err != nil || !r.Hashed() {
		return owner, false
	}
	i := r.Pick(h)
	if i < 0 {
		return owner, false
	}
	return t.Backends[i], true
}
