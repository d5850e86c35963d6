// Package recent keeps the answer of a slow read (a scrape, a broker
// round trip) for an interval, so that the page's polls and the API's
// callers within it share one read instead of each making their own.
package recent

import (
	"context"
	"sync"
	"time"
)

// DefaultInterval is the least time between two reads.
const DefaultInterval = time.Second

// Value is the answer of the last read and when it was made. The zero
// Value reads on first use. Safe for concurrent use: callers within the
// interval, and those waiting while a read runs, get its answer.
type Value[T any] struct {
	mu   sync.Mutex
	last time.Time
	v    T
	err  error
}

// Get returns the answer read gave within interval (DefaultInterval when
// not positive) of now (time.Now when nil), or calls read for a new one.
// An error is an answer too: it is kept for the interval like a value.
func (c *Value[T]) Get(ctx context.Context, interval time.Duration, now func() time.Time, read func(context.Context) (T, error)) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	if !c.last.IsZero() && now().Sub(c.last) < interval {
		return c.v, c.err
	}
	c.v, c.err = read(ctx)
	c.last = now()
	return c.v, c.err
}
