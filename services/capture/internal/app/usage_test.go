package app

import (
	"testing"

	"github.com/connpipe/connpipe/shared/testenv"
)

// TestUsageAndREADMEFollowTheTags: capture -h prints every variable, and the
// README's configuration table lists the same ones.
func TestUsageAndREADMEFollowTheTags(t *testing.T) {
	testenv.CheckUsage(t, WriteUsage, Config{})
	testenv.CheckConfigTable(t, "capture", Config{})
}
