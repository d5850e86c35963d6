package controllog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// opSnapshot marks a snapshot, in the snapshots stream and in the verdict
// announced when a reader adopts one.
const opSnapshot = "snapshot"

// snapshot is a message of conn.control.snapshots: the table folded up to
// and including Table.Position of conn.control.
type snapshot struct {
	Op    string         `json:"op"`
	Table *control.Table `json:"table"`
	By    string         `json:"by,omitempty"`
}

// latestSnapshot returns the table of the latest snapshot, or nil when
// there is none or it cannot be used (counted and logged; the reader then
// folds from the first message).
func (r *Reader) latestSnapshot(ctx context.Context, conn *amqp.Connection, wait time.Duration) *control.Table {
	pos, body, err := lastMessage(ctx, conn, topology.ControlSnapshots, wait)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("control log: cannot read the latest snapshot; folding from the first message", "err", err)
		}
		return nil
	}
	if pos < 0 {
		return nil
	}
	t, err := parseSnapshot(body)
	if err != nil {
		r.stats.BadSnapshot.Add(1)
		r.log.Error("control log: the latest snapshot is unusable; folding from the first message", "offset", pos, "err", err)
		return nil
	}
	r.lastSnap.Store(t.Position)
	return t
}

func parseSnapshot(body []byte) (*control.Table, error) {
	if len(body) > control.MaxMessage*4 {
		return nil, fmt.Errorf("%d bytes", len(body))
	}
	var s snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, err
	}
	if s.Op != opSnapshot || s.Table == nil {
		return nil, errors.New("not a snapshot")
	}
	t, err := control.NewTable(s.Table.Backends)
	if err != nil {
		return nil, err
	}
	if len(t.Backends) > control.MaxBackends || s.Table.Position < 0 || s.Table.Version < 0 {
		return nil, fmt.Errorf("out of range: %d backends, position %d, version %d", len(t.Backends), s.Table.Position, s.Table.Version)
	}
	t.Version, t.Position, t.Seeded = s.Table.Version, s.Table.Position, s.Table.Seeded
	t.Mode, t.HashKey, t.Sticky = s.Table.Mode, s.Table.HashKey, s.Table.Sticky
	return t, nil
}

// maybeSnapshot appends t to the snapshots stream when this reader writes
// snapshots and SnapshotEvery messages have been folded since the latest.
func (r *Reader) maybeSnapshot(ctx context.Context, t *control.Table) {
	every := r.cfg.SnapshotEvery
	if every <= 0 || !r.IsReady() || t.Position-r.lastSnap.Load() < every {
		return
	}
	r.lastSnap.Store(t.Position)
	go func() {
		body, err := json.Marshal(snapshot{Op: opSnapshot, Table: t, By: r.cfg.Name})
		if err == nil {
			err = r.publishTo(ctx, topology.SnapshotsExchange, "", body)
		}
		if err != nil {
			r.log.Warn("control log: could not write a snapshot; the next reader folds more", "position", t.Position, "err", err)
			return
		}
		r.stats.Snapshots.Add(1)
		r.log.Debug("control log snapshot written", "position", t.Position, "version", t.Version)
	}()
}

// seed puts Initial into a log that has no starting table.
func (r *Reader) seed(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, t, err := r.Publish(ctx, control.Seed(r.cfg.Initial, r.cfg.Name))
	switch {
	case err != nil:
		r.log.Warn("control log: could not seed the starting table", "err", err)
	case res.Err != nil:
		r.log.Info("control log: another writer seeded the starting table first", "verdict", res.Err)
	default:
		r.log.Info("control log seeded with the starting table", "position", res.Position, "table", t.Describe())
	}
}
