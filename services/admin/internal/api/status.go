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

	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/services/admin/internal/queues"
	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/redisconn"
)

// Status is the answer of GET /api/v1/status.
type Status struct {
	Ready     bool `json:"ready"`     // the control log has been read
	Connected bool `json:"connected"` // admin is connected to rabbitmq
	// Session is the control log's broker session: up, connecting, or down
	// with the reason.
	Session        string                `json:"session"`
	Table          *control.Table        `json:"table"`
	Weights        string                `json:"weights"`
	Consumers      []ConsumerStatus      `json:"consumers"`
	ConsumersAlive int                   `json:"consumers_alive"`
	Converged      bool                  `json:"converged"` // every live consumer is at the table's version
	Backends       []BackendStatus       `json:"backends"`
	TimeoutMS      int64                 `json:"consumer_timeout_ms"`
	Broker         *BrokerStatus         `json:"broker"`   // null when admin reads no queue depths
	Capture        *CaptureStatus        `json:"capture"`  // the sum of every capture; null without CAPTURE_METRICS_URL
	Captures       []capturestats.Target `json:"captures"` // each capture on its own
	// States is every backend state with how to show it, so that the page
	// and the CLI know them from here.
	States []StateInfo `json:"states"`
}

// StateInfo is one backend state of the states table.
type StateInfo struct {
	Name redisconn.State `json:"name"`
	Tone redisconn.Tone  `json:"tone"` // up, out, drain or wait
	Doc  string          `json:"doc"`
}

// stateInfos is the states table as the status answer gives it.
func stateInfos() []StateInfo {
	var out []StateInfo
	for _, st := range redisconn.States() {
		out = append(out, StateInfo{Name: st, Tone: st.Tone(), Doc: st.Doc()})
	}
	return out
}

// BrokerStatus is the depth of the records queues.
type BrokerStatus struct {
	queues.Depths
	Error string `json:"error,omitempty"`
}

// CaptureStatus is the captures' counters added up, scraped from their
// /metrics: what the pipeline as a whole was offered.
type CaptureStatus struct {
	URL string `json:"url"` // the URLs scraped, passwords redacted
	capturestats.Stats
	Count    int    `json:"count"`    // captures found
	Answered int    `json:"answered"` // captures whose metrics were read
	Error    string `json:"error,omitempty"`
}

// ConsumerStatus is one consumer as last heard of.
type ConsumerStatus struct {
	ID        string `json:"id"`
	Host      string `json:"host"`
	Alive     bool   `json:"alive"`
	Ready     bool   `json:"ready"`
	Version   int64  `json:"version"`
	Position  int64  `json:"position"`
	Weights   string `json:"weights"`
	Converged bool   `json:"converged"`
	// VersionsBehind counts the changes in force that it has not applied.
	VersionsBehind int64             `json:"versions_behind"`
	Records        uint64            `json:"records"`
	Rate           float64           `json:"rate"` // records stored per second, over its last heartbeats
	Stored         map[string]uint64 `json:"stored,omitempty"`
	Unacked        int               `json:"unacked"`
	Acked          uint64            `json:"acked"`
	DeadLettered   uint64            `json:"dead_lettered"`
	// Out names the backends this consumer holds out of rotation, with
	// their state (see Status.States) and its reason.
	Out            map[string]heartbeat.Backend `json:"out,omitempty"`
	LastHeartbeat  string                       `json:"last_heartbeat"` // RFC 3339, when admin received it
	HeartbeatAgeMS int64                        `json:"last_heartbeat_age_ms"`
}

// BackendStatus is one Redis instance of the table.
type BackendStatus struct {
	Name   string  `json:"name"`
	Addr   string  `json:"addr"`
	Weight int     `json:"weight"`
	Share  float64 `json:"share"` // weight / sum of weights
	// State is up, draining, ejected or not_allowed as admin sees it, or
	// the state in which live consumers hold it out of rotation (an
	// instance that answers PING can still refuse every write); Status.States
	// lists them all.
	State      redisconn.State `json:"state"`
	Reachable  bool            `json:"reachable"`
	UsedMemory int64           `json:"used_memory"` // bytes, -1 if unknown
	Error      string          `json:"error,omitempty"`
	// Sentinel is, for a sentinel backend, the primary the sentinels name
	// now and its replicas with their link state.
	Sentinel *redisconn.Replication `json:"sentinel,omitempty"`
	// OutBy names each live consumer that holds it out of rotation, with
	// the state and reason it reports.
	OutBy map[string]heartbeat.Backend `json:"out_by,omitempty"`
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	t := a.cfg.Control.Table()
	session := a.cfg.Control.Broker()
	now := a.cfg.Now()
	st := Status{
		Ready: a.cfg.Control.IsReady(), Connected: session.State == broker.StateUp, Session: session.String(), Table: t.Redacted(),
		Weights: t.String(), Converged: true, TimeoutMS: a.cfg.Members.Timeout().Milliseconds(),
		Consumers: []ConsumerStatus{}, States: stateInfos(),
	}
	for _, m := range a.cfg.Members.Snapshot() {
		c := ConsumerStatus{
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

func (a *API) broker(ctx context.Context) *BrokerStatus {
	if a.cfg.Queues == nil {
		return nil
	}
	d, err := a.cfg.Queues.Depths(ctx)
	bs := &BrokerStatus{Depths: d}
	if err != nil {
		bs.Error = err.Error()
	}
	return bs
}

func (a *API) capture(ctx context.Context) (*CaptureStatus, []capturestats.Target) {
	if a.cfg.Capture == nil {
		return nil, nil
	}
	ts := a.cfg.Capture.Stats(ctx)
	st := &CaptureStatus{Stats: capturestats.Sum(ts), Count: len(ts)}
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
func (a *API) backends(ctx context.Context, t *control.Table) []BackendStatus {
	total := 0
	for _, b := range t.Backends {
		total += b.Weight
	}
	out := make([]BackendStatus, len(t.Backends))
	var wg sync.WaitGroup
	for i, b := range t.Backends {
		bs := &out[i]
		*bs = BackendStatus{Name: b.Name, Addr: control.RedactAddr(b.Addr), Weight: b.Weight, UsedMemory: -1, State: redisconn.StateEjected}
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
func outOfRotation(bs []BackendStatus, cs []ConsumerStatus, alive int) {
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
