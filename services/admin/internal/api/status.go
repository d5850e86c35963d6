package api

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/redact"
	"github.com/connpipe/connpipe/shared/redisconn"
)

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	t := a.cfg.Control.Table()
	session := a.cfg.Control.Broker()
	now := a.cfg.Now()
	st := apitypes.Status{
		Ready: a.cfg.Control.IsReady(), Connected: session.State == broker.StateUp, Session: session.String(), Table: t.Redacted(),
		Weights: t.String(), Converged: true, TimeoutMS: a.cfg.Members.Timeout().Milliseconds(),
		Consumers: []apitypes.ConsumerStatus{}, States: apitypes.StateInfos(),
	}
	for _, m := range a.cfg.Members.Snapshot() {
		c := apitypes.ConsumerStatus{
			ID: m.Consumer, Host: m.Host, Alive: m.Alive, Ready: m.Ready,
			Version: m.Version, Position: m.Position, Weights: m.Weights,
			Converged:      m.Alive && m.Version >= t.Version,
			VersionsBehind: max(0, t.Version-m.Version),
			Records:        m.Records, Rate: m.Rate, Stored: m.Stored, Unacked: m.Unacked, Acked: m.Acked,
			DeadLettered: m.DeadLettered, Out: m.Backends,
			LastHeartbeat: m.LastSeen.UTC().Format(time.RFC3339Nano), HeartbeatAgeMS: now.Sub(m.LastSeen).Milliseconds(),
		}
		if m.Alive {
			st.ConsumersAlive++
			st.Converged = st.Converged && c.Converged
		}
		st.Consumers = append(st.Consumers, c)
	}
	var wg sync.WaitGroup
	wg.Go(func() { st.Broker = a.broker(r.Context()) })
	wg.Go(func() { st.Capture, st.Captures = a.capture(r.Context()) })
	st.Backends = a.backends(r.Context(), t)
	outOfRotation(st.Backends, st.Consumers, st.ConsumersAlive)
	wg.Wait()
	writeJSON(w, http.StatusOK, st)
}

func (a *API) broker(ctx context.Context) *apitypes.BrokerStatus {
	if a.cfg.Queues == nil {
		return nil
	}
	d, err := a.cfg.Queues.Depths(ctx)
	bs := &apitypes.BrokerStatus{Depths: d}
	if err != nil {
		bs.Error = err.Error()
	}
	return bs
}

func (a *API) capture(ctx context.Context) (*apitypes.CaptureStatus, []capturestats.Target) {
	if a.cfg.Capture == nil {
		return nil, nil
	}
	ts := a.cfg.Capture.Stats(ctx)
	st := &apitypes.CaptureStatus{Stats: capturestats.Sum(ts), Count: len(ts)}
	var urls, errs []string
	for _, t := range ts {
		urls = append(urls, t.URL)
		if t.Error != "" {
			errs = append(errs, t.Error)
		} else {
			st.Answered++
		}
	}
	st.URL = strings.Join(urls, ", ")
	if st.Answered == 0 {
		st.Error = strings.Join(errs, "; ")
		if st.Error == "" {
			st.Error = "no capture found"
		}
	}
	return st, ts
}

// backends checks every backend at once, each with a short timeout.
func (a *API) backends(ctx context.Context, t *control.Table) []apitypes.BackendStatus {
	total := 0
	for _, b := range t.Backends {
		total += b.Weight
	}
	out := make([]apitypes.BackendStatus, len(t.Backends))
	var wg sync.WaitGroup
	for i, b := range t.Backends {
		bs := &out[i]
		*bs = apitypes.BackendStatus{Name: b.Name, Addr: redact.Addr(b.Addr), Weight: b.Weight, UsedMemory: -1, State: redisconn.StateEjected}
		if total > 0 {
			bs.Share = float64(b.Weight) / float64(total)
		}
		if err := a.cfg.Allow.Check(b); err != nil {
			bs.State, bs.Error = redisconn.StateNotAllowed, err.Error()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, backendTimeout)
			defer cancel()
			rdb := a.cfg.Redis(b.Addr)
			if err := rdb.Ping(ctx).Err(); err != nil {
				bs.Error = "ping: " + err.Error()
				return
			}
			bs.Reachable = true
			if b.Weight == 0 {
				bs.State = redisconn.StateDraining
			} else {
				bs.State = redisconn.StateUp
			}
			if control.IsSentinel(b.Addr) {
				if repl, err := redisconn.Describe(ctx, rdb); err == nil {
					bs.Sentinel = &repl
				} else {
					bs.Error = err.Error()
				}
			}
			info, err := rdb.Info(ctx, "memory").Result()
			if err != nil {
				bs.Error = "info memory: " + err.Error()
				return
			}
			bs.UsedMemory = usedMemory(info)
		}()
	}
	wg.Wait()
	return out
}

// outOfRotation marks each backend that live consumers hold out of
// rotation with the state they report (the most common one, ties in table order)
// and who reports what.
func outOfRotation(bs []apitypes.BackendStatus, cs []apitypes.ConsumerStatus, alive int) {
	for i := range bs {
		b := &bs[i]
		if b.State == redisconn.StateNotAllowed {
			continue
		}
		votes := map[redisconn.State]int{}
		for _, c := range cs {
			why, ok := c.Out[b.Name]
			if !c.Alive || !ok {
				continue
			}
			if b.OutBy == nil {
				b.OutBy = map[string]heartbeat.Backend{}
			}
			b.OutBy[c.ID] = why
			votes[why.State]++
		}
		if len(votes) == 0 {
			continue
		}
		best, n := redisconn.StateUp, 0
		for _, st := range slices.Sorted(maps.Keys(votes)) {
			if votes[st] > n {
				best, n = st, votes[st]
			}
		}
		b.State = best
		first := b.OutBy[slices.Sorted(maps.Keys(b.OutBy))[0]]
		note := fmt.Sprintf("out of rotation on %d of %d live consumers (%s: %s)", len(b.OutBy), alive, first.State, first.Reason)
		if b.Error == "" {
			b.Error = note
		} else {
			b.Error = note + "; " + b.Error
		}
	}
}

// usedMemory finds used_memory in an INFO memory reply; -1 if absent.
func usedMemory(info string) int64 {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}
