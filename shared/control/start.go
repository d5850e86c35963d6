package control

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/connpipe/connpipe/shared/redact"
)

// Start is the starting table of BACKENDS and WEIGHTS, and BACKEND_ALLOW's
// list, checked against each other: a starting backend outside the list is
// a configuration error. The errors name the variable.
func Start(backends, weights, allow string) (*Table, *Allow, error) {
	t, err := StartTable(backends, weights)
	if err != nil {
		return nil, nil, err
	}
	a, err := ParseAllow(allow, t.Backends)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range t.Backends {
		if err := a.Check(b); err != nil {
			return nil, nil, fmt.Errorf("BACKENDS: %w", err)
		}
	}
	return t, a, nil
}

// StartTable is the starting table of BACKENDS and WEIGHTS.
func StartTable(backends, weights string) (*Table, error) {
	bs, err := ParseBackends(backends, weights)
	if err != nil {
		return nil, err
	}
	t, err := NewTable(bs)
	if err != nil {
		return nil, fmt.Errorf("BACKENDS/WEIGHTS: %w", err)
	}
	return t, nil
}

// ParseBackends parses the BACKENDS list, "name=host:port" (or
// name=redis://…, name=rediss://…; see CheckAddr) items separated by
// commas (envconfig cannot hold maps whose values contain ':'), together
// with WEIGHTS, "name=weight" items. Backends that WEIGHTS does not name
// get weight 1.
func ParseBackends(backends, weights string) ([]Backend, error) {
	var out []Backend
	seen := map[string]bool{}
	for _, item := range sentinelItems(splitList(backends)) {
		name, addr, ok := strings.Cut(item, "=")
		name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("BACKENDS item %q: want name=host:port or name=redis://user:password@host:port/db", redact.Addr(item))
		}
		if err := CheckAddr(addr); err != nil {
			return nil, fmt.Errorf("BACKENDS item %s: %w", name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("BACKENDS: backend %q listed twice", name)
		}
		seen[name] = true
		out = append(out, Backend{Name: name, Addr: addr, Weight: 1})
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
		if err != nil || n < 0 || n > MaxWeight {
			return nil, fmt.Errorf("WEIGHTS item %q: weight must be an integer 0..%d", item, MaxWeight)
		}
		i := index(out, name)
		if i < 0 {
			return nil, fmt.Errorf("WEIGHTS item %q: backend %q is not in BACKENDS", item, name)
		}
		out[i].Weight = n
	}
	return out, nil
}

// sentinelItems joins back the sentinel hosts of a sentinel:// address
// that the comma split apart: an item that follows one and does not start
// with a backend name and "=" is its next host.
func sentinelItems(items []string) []string {
	var out []string
	for _, item := range items {
		name, _, named := strings.Cut(item, "=")
		named = named && CheckName(strings.TrimSpace(name)) == nil
		if n := len(out); n > 0 && !named {
			if _, prev, _ := strings.Cut(out[n-1], "="); IsSentinel(strings.TrimSpace(prev)) {
				out[n-1] += "," + strings.TrimSpace(item)
				continue
			}
		}
		out = append(out, item)
	}
	return out
}

// splitList splits a list separated by commas, spaces or newlines.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })
}
