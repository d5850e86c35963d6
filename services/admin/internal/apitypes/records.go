package apitypes

import (
	"github.com/connpipe/connpipe/shared/controllog"
	"github.com/connpipe/connpipe/shared/record"
)

// RecordsResponse is the answer of GET /api/v1/records.
type RecordsResponse struct {
	Records        []RecordItem      `json:"records,omitempty"` // written first, one by one (writeRecords)
	CountByBackend map[string]int    `json:"count_by_backend"`
	Truncated      bool              `json:"truncated"`
	From           int64             `json:"from"` // first bucket second read
	To             int64             `json:"to"`   // last bucket second read
	Errors         map[string]string `json:"errors,omitempty"`
	Error          string            `json:"error,omitempty"` // set when no backend could be read (503)
	// Owner is set when only the instance owning the queried key was
	// asked (mode hash; see keyOwner); ?all=true asks every instance.
	Owner string `json:"owner,omitempty"`
	// BytesFetched is the bytes of records read from Redis to answer.
	BytesFetched int64 `json:"bytes_fetched"`
}

// CountResponse is the answer of GET /api/v1/records?count=true: how many
// records each instance holds for the window and filter, with no limit.
type CountResponse struct {
	CountByBackend map[string]int64 `json:"count_by_backend"`
	Total          int64            `json:"total"`
	// Source is "counters" when a plain window was answered from the
	// per-second counters, "scan" when records were read and matched.
	Source       string            `json:"source"`
	From         int64             `json:"from"`
	To           int64             `json:"to"`
	BytesFetched int64             `json:"bytes_fetched"`
	Owner        string            `json:"owner,omitempty"`
	Errors       map[string]string `json:"errors,omitempty"`
	Error        string            `json:"error,omitempty"`
}

// RecordItem is a record in its JSON form with the backend that held it.
type RecordItem struct {
	Backend string `json:"backend"`
	record.JSON
}

// HistoryEntry is one message of the control log in GET /api/v1/history:
// who (the operator admin authenticated, or what a hand-published message
// says), when, what, and the version of the table after it.
type HistoryEntry struct {
	controllog.Entry
	By   string `json:"by"`
	ID   string `json:"id,omitempty"`
	Op   string `json:"op"`
	What string `json:"what"`
}

// History is the answer of GET /api/v1/history.
type History struct {
	Entries []HistoryEntry `json:"entries"`
}
