package app

import (
	"bytes"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/testenv"
)

// TestUsageAndREADMEFollowTheTags: consumer -h prints every variable, and
// the README's table lists the same ones.
func TestUsageAndREADMEFollowTheTags(t *testing.T) {
	var b bytes.Buffer
	WriteUsage(&b)
	for _, v := range config.Vars(Config{}) {
		if !strings.Contains(b.String(), "  "+v.Name+" ") {
			t.Errorf("-h does not list %s", v.Name)
		}
	}
	testenv.CheckConfigTable(t, "consumer", Config{})
}
