package app

import (
	"fmt"

	"github.com/connpipe/connpipe/services/capture/internal/spool"
)

// minSpoolBytes is the smallest SPOOL_MAX_BYTES accepted.
const minSpoolBytes = 64 << 10

func (c *Config) validateSpool() error {
	switch spool.FullPolicy(c.SpoolFullPolicy) {
	case spool.DropNewest, spool.DropOldest:
	default:
		return fmt.Errorf("SPOOL_FULL_POLICY=%q: want %s or %s", c.SpoolFullPolicy, spool.DropNewest, spool.DropOldest)
	}
	switch spool.FsyncPolicy(c.SpoolFsync) {
	case spool.FsyncNever, spool.FsyncBatch, spool.FsyncInterval:
	default:
		return fmt.Errorf("SPOOL_FSYNC=%q: want %s, %s or %s", c.SpoolFsync, spool.FsyncNever, spool.FsyncBatch, spool.FsyncInterval)
	}
	if c.SpoolMaxBytes < minSpoolBytes {
		return fmt.Errorf("SPOOL_MAX_BYTES=%d: want at least %d", c.SpoolMaxBytes, minSpoolBytes)
	}
	return nil
}
