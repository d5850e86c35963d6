// Package config loads a service's configuration from the environment with
// envconfig and parses the values that envconfig cannot hold on its own.
package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/kelseyhightower/envconfig"
)

// Load fills spec (a pointer to a struct with envconfig tags) from the
// environment. The error names the variable and the bad value.
func Load(spec any) error {
	if err := envconfig.Process("", spec); err != nil {
		var perr *envconfig.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("environment variable %s=%q: cannot parse as %s: %w", perr.KeyName, perr.Value, perr.TypeName, perr.Err)
		}
		return fmt.Errorf("environment: %w", err)
	}
	return nil
}

// sentinelItems joins back the sentinel hosts of a sentinel:// address
// that the comma split apart: an item that follows one and does not start
// with a backend name and "=" is its next host.
func sentinelItems(items []string) []string {
	var out []string
	for _, item := range items {
		name, _, named := strings.Cut(item, "=")
		named = named && control.CheckName(strings.TrimSpace(name)) == nil
		if n := len(out); n > 0 && !named {
			if _, prev, _ := strings.Cut(out[n-1], "="); control.IsSentinel(strings.TrimSpace(prev)) {
				out[n-1] += "," + strings.TrimSpace(item)
				continue
			}
		}
		out = append(out, item)
	}
	return out
}

// Backends parses the BACKENDS list, "name=host:port" (or name=redis://…,
// name=rediss://…; see control.CheckAddr) items separated by
// commas (envconfig cannot hold maps whose values contain ':'), together
// with WEIGHTS, "name=weight" items, into the initial routing table.
// Backends that WEIGHTS does not name get weight 1.
func Backends(backends, weights string) ([]control.Backend, error) {
	var out []control.Backend
	seen := map[string]bool{}
	for _, item := range sentinelItems(splitList(backends)) {
		name, addr, ok := strings.Cut(item, "=")
		name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("BACKENDS item %q: want name=host:port or name=redis://user:password@host:port/db", control.RedactAddr(item))
		}
		if err := control.CheckAddr(addr); err != nil {
			return nil, fmt.Errorf("BACKENDS item %s: %w", name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("BACKENDS: backend %q listed twice", name)
		}
		seen[name] = true
		out = append(out, control.Backend{Name: name, Addr: addr, Weight: 1})
	}
	if len(out) == 0 {
		return nil, errors.New("BACKENDS is empty: want name=host:port[,name=host:port...]")
	}
	for _, item := range splitList(weights) {
		name, w, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, fmt.Errorf("WEIGHTS item %q: want name=weight", item)
		}
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 0 || n > control.MaxWeight {
			return nil, fmt.Errorf("WEIGHTS item %q: weight must be an integer 0..%d", item, control.MaxWeight)
		}
		i := -1
		for j := range out {
			if out[j].Name == name {
				i = j
			}
		}
		if i < 0 {
			return nil, fmt.Errorf("WEIGHTS item %q: backend %q is not in BACKENDS", item, name)
		}
		out[i].Weight = n
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}
