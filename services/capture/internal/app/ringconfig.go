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

// Processors is how many Go processors (GOMAXPROCS) a live capture with
// CAPTURE_WORKERS set runs: one per reader, within the ones the runtime
// was given. Readers sleep between blocks, and spare processors cost
// wake-ups: each time a reader wakes, the runtime starts another thread
// to look for work on an idle processor. 0: leave GOMAXPROCS as it is
// (CAPTURE_WORKERS=0, a replay, or GOMAXPROCS set in the environment).
func (c *Config) Processors(getenv func(string) string) int {
	if c.CaptureWorkers == 0 || len(c.PcapFiles) > 0 || getenv("GOMAXPROCS") != "" {
		return 0
	}
	return min(c.CaptureWorkers, runtime.GOMAXPROCS(0))
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
