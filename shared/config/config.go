// Package config loads a service's configuration from the environment with
// envconfig. A service's configuration is a struct of its own variables
// and the shared blocks it embeds (AMQP, Ops, Pool, Redis, Store); each
// variable is declared once, in a struct tag that gives its name, default
// and meaning to the code, -h and the README check alike.
package config

import (
	"errors"
	"fmt"
	"os"

	"github.com/kelseyhightower/envconfig"
)

// Load fills spec (a pointer to a struct with envconfig tags) from the
// environment, then gives the variables the environment leaves unset the
// defaults spec's Tune states. The error names the variable and the bad
// value.
func Load(spec any) error {
	if err := envconfig.Process("", spec); err != nil {
		var perr *envconfig.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("environment variable %s=%q: cannot parse as %s: %w", perr.KeyName, perr.Value, perr.TypeName, perr.Err)
		}
		return fmt.Errorf("environment: %w", err)
	}
	return applyTune(spec, func(name string) bool {
		_, set := os.LookupEnv(name)
		return !set
	})
}
