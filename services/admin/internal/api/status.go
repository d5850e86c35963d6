package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/connpipe/connpipe/shared/control"
)

// Status is the answer of GET /api/v1/status.
type Status struct {
	Ready          bool             `json:"ready"`     // the control log has been read
	Connected      bool             `json:"connected"` // admin is connected to rabbitmq
	Table          *control.Table   `json:"table"`
	Weights        string           `json:"weights"`
	Consumers      []ConsumerStatus `json:"consumers"`
	ConsumersAlive int              `json:"consumers_alive"`
	Converged      bool             `json:"converged"` // every live consumer is at the table's version
	Backends       []BackendStatus  `json:"backends"`
	TimeoutMS      int64            `json:"consumer_timeout_ms"`
}

// ConsumerStatus is one consumer as last heard of.
type ConsumerStatus struct {
	ID             string `json:"id"`
	Host           string `json:"host"`
	Alive          bool   `json:"alive"`
	Ready          bool   `json:"ready"`
	Version        int64  `json:"version"`
	Position       int64  `json:"position"`
	Weights        string `json:"weights"`
	Converged      bool   `json:"converged"`
	Records        uint64 `json:"records"`
	Acked          uint64 `json:"acked"`
	LastHeartbeat  string `json:"last_heartbeat"` // RFC 3339, when admin received it
	HeartbeatAgeMS int64  `json:"last_heartbeat_age_ms"`
}

// BackendStatus is one Redis instance of the table.
type BackendStatus struct {
	Name       string  `json:"name"`
	Addr       string  `json:"addr"`
	Weight     int     `json:"weight"`
	Share      float64 `json:"share"` // weight / sum of weights
	Reachable  bool    `json:"reachable"`
	UsedMemory int64   `json:"used_memory"` // bytes, -1 if unknown
	Error      string  `json:"error,omitempty"`
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	t := a.cfg.Control.Table()
	now := a.cfg.Now()
	st := Status{
		Ready: a.cfg.Control.IsReady(), Connected: a.cfg.Control.Connected(), Table: t,
		Weights: t.String(), Converged: true, TimeoutMS: a.cfg.Members.Timeout().Milliseconds(),
		Consumers: []ConsumerStatus{},
	}
	for _, m := range a.cfg.Members.Snapshot() {
		c := ConsumerStatus{
			ID: m.Consumer, Host: m.Host, Alive: m.Alive, Ready: m.Ready,
			Version: m.Version, Position: m.Position, Weights: m.Weights,
			Converged: m.Alive && m.Version >= t.Version,
			Records:   m.Records, Acked: m.Acked,
			LastHeartbeat: m.LastSeen.UTC().Format(time.RFC3339Nano), HeartbeatAgeMS: now.Sub(m.LastSeen).Milliseconds(),
		}
		if m.Alive {
			st.ConsumersAlive++
			st.Converged = st.Converged && c.Converged
		}
		st.Consumers = append(st.Consumers, c)
	}
	st.Backends = a.backends(r.Context(), t)
	writeJSON(w, http.StatusOK, st)
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
		*bs = BackendStatus{Name: b.Name, Addr: b.Addr, Weight: b.Weight, UsedMemory: -1}
		if total > 0 {
			bs.Share = float64(b.Weight) / float64(total)
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
