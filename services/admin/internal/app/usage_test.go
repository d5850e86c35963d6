package app_test

import (
	"testing"

	"github.com/connpipe/connpipe/services/admin/internal/app"
	"github.com/connpipe/connpipe/services/admin/internal/cli"
	"github.com/connpipe/connpipe/shared/testenv"
)

// TestREADMEListsTheVariables: the README's configuration table lists
// exactly what admin serve and the admin commands read, from their tags.
func TestREADMEListsTheVariables(t *testing.T) {
	testenv.CheckConfigTable(t, "admin", app.Config{})
	testenv.CheckConfigTable(t, "admin CLI", cli.Env{})
}
