// Package source delivers captured frames: live from an interface through
// an AF_PACKET socket (Live), or from pcap and pcapng files (File, Files).
package source

import (
	"context"
	"errors"
	"fmt"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
)

// Packet is one captured frame.
type Packet struct {
	TS   int64           // capture time, Unix nanoseconds, as stored or given by the kernel
	Link decode.LinkType // link-layer type of Data
	Data []byte          // the frame; valid until the next call to Next
	Len  int             // the frame's length on the wire; 0 when not known (taken as len(Data))
}

// Source yields frames until it ends (io.EOF) or fails.
type Source interface {
	// Next returns the next frame. It returns io.EOF at the end of the
	// input and ctx.Err() once ctx ends.
	Next(ctx context.Context) (Packet, error)
	Close() error
}

// ErrTruncated reports a capture file that ends in the middle of a record.
var ErrTruncated = errors.New("truncated")

// TruncatedError tells where a capture file ends mid-record. Every whole
// packet before Offset has been delivered.
type TruncatedError struct {
	File    string
	Offset  int64 // byte offset of the incomplete record (in the uncompressed stream)
	Packets int   // whole packets read from the file before it
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("capture file %s is truncated: the record at byte %d is incomplete (%d whole packets read before it)",
		e.File, e.Offset, e.Packets)
}

// Unwrap makes errors.Is(err, ErrTruncated) true.
func (e *TruncatedError) Unwrap() error { return ErrTruncated }
