package control

import (
	"fmt"
	"slices"
)

// MaxBackends caps the backends of a table. It is part of the fold, so it
// is a constant: a reader with another cap would fold another table.
const MaxBackends = 64

// Seed is the message that puts t, as the log's starting table, into a log
// that has none. expect_version 0 makes a seed sent after any change
// refused as stale; a second seed is refused as ErrSeeded. Either way
// exactly one seed wins however many writers race.
func Seed(t *Table, by string) Message {
	zero := int64(0)
	return Message{
		Op:            OpSeed,
		Table:         &Table{Backends: t.Backends, Mode: t.Mode, HashKey: t.HashKey, Sticky: t.Sticky},
		ExpectVersion: &zero,
		By:            by,
	}
}

// SameRouting reports whether a and b route alike: the same backends,
// addresses and weights, mode, key and stick table.
func SameRouting(a, b *Table) bool {
	return slices.Equal(a.Backends, b.Backends) && a.RoutingMode() == b.RoutingMode() &&
		a.Key() == b.Key() && a.Sticky == b.Sticky
}

// applySeed makes the seed's table the one in force, at version 0, unless
// the log has a starting table or a change already.
func applySeed(t, next *Table, m Message, res Result) (*Table, Result) {
	if t.Seeded || t.Version > 0 {
		res.Err = fmt.Errorf("%w (version %d)", ErrSeeded, t.Version)
		return next, res
	}
	seeded, err := NewTable(m.Table.Backends)
	if err == nil && len(seeded.Backends) > MaxBackends {
		err = fmt.Errorf("%w: the seed has %d, at most %d", ErrTooMany, len(seeded.Backends), MaxBackends)
	}
	if err == nil {
		err = applyMode(seeded, Message{Mode: m.Table.Mode, HashKey: m.Table.HashKey, Sticky: &m.Table.Sticky})
	}
	if err != nil {
		res.Err = fmt.Errorf("seed: %w", err)
		return next, res
	}
	seeded.Version, seeded.Position, seeded.Seeded = t.Version, next.Position, true
	res.Changed = !SameRouting(t, seeded)
	return seeded, res
}
