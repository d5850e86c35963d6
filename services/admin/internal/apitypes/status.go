package apitypes

import (
	"github.com/connpipe/connpipe/services/admin/internal/capturestats"
	"github.com/connpipe/connpipe/services/admin/internal/queues"
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

// StateInfos is the states table as the status answer gives it.
func StateInfos() []StateInfo {
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
	// instance that answers PING can still refuse every write);
	// Status.States lists them all.
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
