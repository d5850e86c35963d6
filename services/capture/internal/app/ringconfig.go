package app

import (
	"fmt"
	"runtime"
	"time"
)

// maxCaptureWorkers bounds CAPTURE_WORKERS (PACKET_FANOUT takes at most
// 65536 sockets; far fewer make sense).
const maxCaptureWorkers = 1024

// workers is CAPTURE_WORKERS, or the number of CPUs when it is 0.
func (c *Config) workers() int {
	if c.CaptureWorkers == 0 {
		return runtime.NumCPU()
	}
	return c.CaptureWorkers
}

// validateRing checks CAPTURE_WORKERS and the RING_* settings.
func (c *Config) validateRing() error {
	if c.CaptureWorkers < 0 || c.CaptureWorkers > maxCaptureWorkers {
		return fmt.Errorf("CAPTURE_WORKERS=%d: want 0 (the number of CPUs) to %d", c.CaptureWorkers, maxCaptureWorkers)
	}
	const page = 4096
	if c.RingBlockSize < page || c.RingBlockSize%page != 0 || c.RingBlockSize > 1<<30 {
		return fmt.Errorf("RING_BLOCK_SIZE=%d: want a multiple of 4096 bytes, at most 1 GiB", c.RingBlockSize)
	}
	if c.RingBlocks < 1 || int64(c.RingBlocks)*int64(c.RingBlockSize) > 1<<31 {
		return fmt.Errorf("RING_BLOCKS=%d: want 1 or more, with RING_BLOCKS x RING_BLOCK_SIZE at most 2 GiB", c.RingBlocks)
	}
	if c.RingTimeout < time.Millisecond || c.RingTimeout%time.Millisecond != 0 {
		return fmt.Errorf("RING_TIMEOUT=%s: want whole milliseconds, at least 1ms", c.RingTimeout)
	}
	return nil
}
