package apitypes

import (
	"time"

	"github.com/connpipe/connpipe/shared/control"
)

// MaxWait is the longest ?wait a change may ask for.
const MaxWait = 5 * time.Minute

// WeightsRequest is the body of PUT /api/v1/weights.
type WeightsRequest struct {
	Weights       map[string]int `json:"weights"`
	ExpectVersion *int64         `json:"expect_version,omitempty"`
}

// WeightsResponse is the answer to a change that applied.
type WeightsResponse struct {
	control.Table
	ChangePosition int64    `json:"change_position"`
	ID             string   `json:"id"`
	Converged      bool     `json:"converged"`
	Pending        []string `json:"pending"`
	ConsumersAlive int      `json:"consumers_alive"`
}

// BackendRequest is the body of POST /api/v1/backends.
type BackendRequest struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Weight *int   `json:"weight,omitempty"` // 1 if left out
	// Credential names the login each reader finds in its own
	// REDIS_CREDENTIALS; a password in Addr is refused.
	Credential string `json:"credential,omitempty"`
}

// ModeRequest is the body of PUT /api/v1/mode; fields left out keep their value.
type ModeRequest struct {
	Mode    control.Mode    `json:"mode,omitempty"`
	HashKey control.HashKey `json:"hash_key,omitempty"`
	Sticky  *bool           `json:"sticky,omitempty"`
}

// Modes is the answer of GET /api/v1/modes: the rows of control.Modes and
// control.HashKeys, the defaults first, from which the page builds its
// choices.
type Modes struct {
	Modes    []control.ModeInfo    `json:"modes"`
	HashKeys []control.HashKeyInfo `json:"hash_keys"`
}
