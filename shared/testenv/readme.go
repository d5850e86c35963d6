package testenv

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/config"
)

var readmeName = regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")

// CheckConfigTable fails the test unless the README's configuration table
// lists exactly the variables of spec (a service's Config) for service:
// the struct tags are the one source, and the README must follow them.
func CheckConfigTable(t testing.TB, service string, spec any) {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	inTable := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| variable | service |") {
			inTable = true
			continue
		}
		if inTable && !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|")
		if !inTable || len(cells) < 4 || strings.HasPrefix(cells[1], "---") {
			continue
		}
		services := strings.Split(strings.TrimSpace(cells[2]), ",")
		for i := range services {
			services[i] = strings.TrimSpace(services[i])
		}
		// "all" is the three services, not the admin commands.
		all := slices.Contains(services, "all") && slices.Contains([]string{"capture", "consumer", "admin"}, service)
		if !slices.Contains(services, service) && !all {
			continue
		}
		for _, m := range readmeName.FindAllStringSubmatch(cells[1], -1) {
			listed[m[1]] = true
		}
	}
	if len(listed) == 0 {
		t.Fatalf("%s: no configuration table rows for %s", path, service)
	}
	vars := map[string]bool{}
	for _, v := range config.Vars(spec) {
		vars[v.Name] = true
		if !listed[v.Name] {
			t.Errorf("README's configuration table lacks %s for %s", v.Name, service)
		}
		if v.Desc == "" {
			t.Errorf("%s has no desc tag: -h cannot say what it means", v.Name)
		}
	}
	for name := range listed {
		if !vars[name] {
			t.Errorf("README's configuration table lists %s for %s, which %s does not read", name, service, service)
		}
	}
}

// CheckUsage fails the test unless usage (a service's -h text) lists every
// variable of spec.
func CheckUsage(t testing.TB, usage func(io.Writer), spec any) {
	t.Helper()
	var b strings.Builder
	usage(&b)
	for _, v := range config.Vars(spec) {
		if !strings.Contains(b.String(), "  "+v.Name+" ") {
			t.Errorf("-h does not list %s", v.Name)
		}
	}
}
