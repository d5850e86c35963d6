//go:build !linux

package source

import (
	"context"
	"errors"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
)

// LiveConfig configures a live capture.
type LiveConfig struct {
	Interface    string
	Filter       *filter.Filter
	Tunnels      *filter.Tunnels
	Snaplen      int
	Workers      int
	BlockSize    int
	Blocks       int
	BlockTimeout time.Duration
}

// Ring defaults, as on Linux.
const (
	DefaultBlockSize    = 2 << 20
	DefaultBlocks       = 8
	DefaultBlockTimeout = 200 * time.Millisecond
)

// Live is only implemented on Linux (AF_PACKET).
type Live struct{}

// RingStats are a reader's kernel counters.
type RingStats struct{ Packets, Drops, Freezes uint64 }

// ErrNoLive reports that live capture needs Linux.
var ErrNoLive = errors.New("live capture needs Linux (AF_PACKET); read files with PCAP_FILES")

// OpenLive fails outside Linux.
func OpenLive(LiveConfig) ([]*Live, error)               { return nil, ErrNoLive }
func (l *Live) LinkType() decode.LinkType                { return decode.LinkUnknown }
func (l *Live) Worker() int                              { return 0 }
func (l *Live) SkipsOutgoing() bool                      { return false }
func (l *Live) NextBlock(context.Context) (Block, error) { return Block{}, ErrNoLive }
func (l *Live) Release()                                 {}
func (l *Live) Pending() bool                            { return false }
func (l *Live) Stats() (RingStats, error)                { return RingStats{}, ErrNoLive }
func (l *Live) Close() error                             { return nil }
