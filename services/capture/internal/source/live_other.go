//go:build !linux

package source

import (
	"context"
	"errors"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
)

// LiveConfig configures a live capture.
type LiveConfig struct {
	Interface string
	Filter    *filter.Filter
	Snaplen   int
	RcvBuf    int
}

// Live is only implemented on Linux (AF_PACKET).
type Live struct{}

// ErrNoLive reports that live capture needs Linux.
var ErrNoLive = errors.New("live capture needs Linux (AF_PACKET); read files with PCAP_FILES")

// OpenLive fails outside Linux.
func OpenLive(LiveConfig) (*Live, error)             { return nil, ErrNoLive }
func (l *Live) LinkType() decode.LinkType            { return decode.LinkUnknown }
func (l *Live) Next(context.Context) (Packet, error) { return Packet{}, ErrNoLive }
func (l *Live) Drops() (uint64, error)               { return 0, ErrNoLive }
func (l *Live) Close() error                         { return nil }
