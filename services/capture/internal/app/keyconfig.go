package app

import (
	"fmt"
	"regexp"

	"github.com/connpipe/connpipe/services/capture/internal/keyscan"
)

// keyRule compiles KEY_RULE; nil when it is empty.
func (c *Config) keyRule() (*regexp.Regexp, error) {
	if c.KeyRule == "" {
		return nil, nil
	}
	re, err := keyscan.ParseRule(c.KeyRule)
	if err != nil {
		return nil, fmt.Errorf("KEY_RULE=%q: %w", c.KeyRule, err)
	}
	return re, nil
}

// validateKey checks the KEY_ variables.
func (c *Config) validateKey() error {
	if _, err := c.keyRule(); err != nil {
		return err
	}
	if c.KeyScanBytes < 1 || c.KeyScanBytes > 1<<20 {
		return fmt.Errorf("KEY_SCAN_BYTES=%d: want 1..1048576 bytes", c.KeyScanBytes)
	}
	if c.KeyWait <= 0 {
		return fmt.Errorf("KEY_WAIT=%s: must be positive", c.KeyWait)
	}
	if c.KeyMaxConns < 1 {
		return fmt.Errorf("KEY_MAX_CONNS=%d: must be at least 1", c.KeyMaxConns)
	}
	if c.KeyMaxBytes < 1 {
		return fmt.Errorf("KEY_MAX_BYTES=%d: must be at least 1", c.KeyMaxBytes)
	}
	return nil
}
