package app

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	for _, name := range []string{"AMQP_URL", "BACKENDS", "WEIGHTS", "RETENTION", "REDIS_PREFIX", "REDIS_TIMEOUT",
		"PREFETCH", "MAX_MESSAGE_BYTES", "DRAINED_FALLBACK", "CONSUMER_ID", "HEARTBEAT_INTERVAL", "METRICS_ADDR", "LOG_LEVEL", "LOG_FORMAT"} {
		t.Setenv(name, "") // restored when the test ends
		os.Unsetenv(name)
	}
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	id := cfg.ConsumerID
	cfg.ConsumerID = ""
	if cfg != want {
		t.Fatalf("defaults from an empty environment:\n got %+v\nwant %+v", cfg, want)
	}
	if len(id) < 8 || !strings.Contains(id, "-") {
		t.Fatalf("default CONSUMER_ID %q: want host-random", id)
	}
	tbl, err := cfg.Table()
	if err != nil || tbl.String() != "redis-a=30 redis-b=70" {
		t.Fatalf("default table %v, %v", tbl, err)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct{ name, value string }{
		{"PREFETCH", "lots"},
		{"PREFETCH", "0"},
		{"PREFETCH", "70000"},
		{"MAX_MESSAGE_BYTES", "100"},
		{"MAX_MESSAGE_BYTES", "1073741824"},
		{"RETENTION", "forever"},
		{"RETENTION", "-1s"},
		{"REDIS_TIMEOUT", "0s"},
		{"HEARTBEAT_INTERVAL", "0"},
		{"BACKENDS", "redis-a"},
		{"BACKENDS", "redis-a=no-port"},
		{"BACKENDS", ""},
		{"WEIGHTS", "redis-a=300"},
		{"WEIGHTS", "redis-z=1"},
		{"WEIGHTS", "redis-a=0,redis-b=0"},
		{"REDIS_PREFIX", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.name, tt.value)
			_, err := LoadConfig()
			if err == nil {
				t.Fatalf("%s=%q accepted", tt.name, tt.value)
			}
			if !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("error %q does not name %s", err, tt.name)
			}
		})
	}
}

func TestValidateKeepsGivenID(t *testing.T) {
	cfg := Defaults()
	cfg.ConsumerID = "c-7"
	cfg.HeartbeatInterval = 5 * time.Second
	if err := cfg.Validate(); err != nil || cfg.ConsumerID != "c-7" {
		t.Fatalf("Validate: %v, id %q", err, cfg.ConsumerID)
	}
}
