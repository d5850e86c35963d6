package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadNamesTheVariable(t *testing.T) {
	var spec struct {
		Retention time.Duration `envconfig:"RETENTION" default:"5m"`
		Prefetch  int           `envconfig:"PREFETCH" default:"64"`
	}
	t.Setenv("RETENTION", "five minutes")
	err := Load(&spec)
	if err == nil || !strings.Contains(err.Error(), "RETENTION") || !strings.Contains(err.Error(), "five minutes") {
		t.Fatalf("error %v does not name RETENTION and its value", err)
	}
	t.Setenv("RETENTION", "3s")
	if err := Load(&spec); err != nil || spec.Retention != 3*time.Second || spec.Prefetch != 64 {
		t.Fatalf("%v %+v", err, spec)
	}
}

type tuned struct {
	Ops
	Store
	Own string `envconfig:"OWN" default:"x" desc:"its own"`
}

func (tuned) Tune() []Var {
	return []Var{{Name: "METRICS_ADDR", Default: ":9999"}, {Name: "REDIS_PREFIX", Desc: "another meaning"}}
}

// TestBlocksAndTune: a service's struct sees its blocks' variables as its
// own, in field order; its Tune gives a default and a meaning of its own
// to -h, to Defaults and to Load (unless the environment sets it).
func TestBlocksAndTune(t *testing.T) {
	var names []string
	for _, v := range Vars(tuned{}) {
		names = append(names, v.Name)
		switch v.Name {
		case "METRICS_ADDR":
			if v.Default != ":9999" || v.Desc != "serve /metrics and /healthz here (empty: no server)" {
				t.Errorf("METRICS_ADDR %+v", v)
			}
		case "REDIS_PREFIX":
			if v.Default != "cp:" || v.Desc != "another meaning" {
				t.Errorf("REDIS_PREFIX %+v", v)
			}
		}
	}
	if got := strings.Join(names, " "); got != "METRICS_ADDR METRICS_TOKEN LOG_LEVEL LOG_FORMAT RETENTION REDIS_PREFIX OWN" {
		t.Fatalf("Vars = %s", got)
	}
	var d tuned
	if err := Defaults(&d); err != nil || d.MetricsAddr != ":9999" || d.LogLevel != "info" || d.Retention != 5*time.Minute || d.Own != "x" {
		t.Fatalf("Defaults: %v %+v", err, d)
	}
	var l tuned
	t.Setenv("LOG_LEVEL", "debug")
	if err := Load(&l); err != nil || l.MetricsAddr != ":9999" || l.LogLevel != "debug" {
		t.Fatalf("Load: %v %+v", err, l)
	}
	t.Setenv("METRICS_ADDR", "")
	if err := Load(&l); err != nil || l.MetricsAddr != "" {
		t.Fatalf("METRICS_ADDR set empty: %v %q", err, l.MetricsAddr)
	}
}

type misspelt struct{ Ops }

func (misspelt) Tune() []Var { return []Var{{Name: "METRIC_ADDR", Default: ":1"}} }

func TestTuneOfNoVariableIsAnError(t *testing.T) {
	var m misspelt
	if err := Load(&m); err == nil || !strings.Contains(err.Error(), "METRIC_ADDR") {
		t.Fatalf("Load: %v", err)
	}
	if err := Defaults(&m); err == nil {
		t.Fatal("Defaults accepted a misspelt Tune")
	}
}
