package app

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestRingConfig(t *testing.T) {
	bad := []struct{ env, val string }{
		{"CAPTURE_WORKERS", "-1"},
		{"CAPTURE_WORKERS", "5000"},
		{"CAPTURE_WORKERS", "many"},
		{"RING_BLOCK_SIZE", "1000"},
		{"RING_BLOCK_SIZE", "0"},
		{"RING_BLOCK_SIZE", "2147483648"},
		{"RING_BLOCKS", "0"},
		{"RING_BLOCKS", "4096"}, // 4 GiB with 1 MiB blocks
		{"RING_TIMEOUT", "0s"},
		{"RING_TIMEOUT", "1500us"},
	}
	for _, tt := range bad {
		t.Run(tt.env+"="+tt.val, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tt.env, tt.val)
			_, err := LoadConfig(nil, io.Discard)
			if err == nil {
				t.Fatalf("%s=%q accepted", tt.env, tt.val)
			}
			if !strings.Contains(err.Error(), tt.env) {
				t.Fatalf("error %q does not name %s", err, tt.env)
			}
		})
	}
	clearEnv(t)
	c, err := LoadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.workers() != runtime.NumCPU() {
		t.Fatalf("default workers %d, want the %d CPUs", c.workers(), runtime.NumCPU())
	}
	t.Setenv("CAPTURE_WORKERS", "3")
	t.Setenv("RING_BLOCK_SIZE", "65536")
	t.Setenv("RING_BLOCKS", "64")
	t.Setenv("RING_TIMEOUT", "250ms")
	if c, err = LoadConfig(nil, io.Discard); err != nil || c.workers() != 3 || c.RingBlockSize != 65536 || c.RingBlocks != 64 || c.RingTimeout.Milliseconds() != 250 {
		t.Fatalf("%+v %v", c, err)
	}
}

// TestProcessors: a live capture with CAPTURE_WORKERS set runs one Go
// processor per reader, unless GOMAXPROCS is set or it is a replay.
func TestProcessors(t *testing.T) {
	have := runtime.GOMAXPROCS(0)
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		workers int
		files   []string
		env     string
		want    int
	}{
		{0, nil, "", 0},
		{1, nil, "", 1},
		{have + 3, nil, "", have},
		{1, nil, "4", 0},
		{1, []string{"a.pcap"}, "", 0},
	} {
		c := Config{CaptureWorkers: tc.workers, PcapFiles: tc.files}
		if got := c.Processors(env(tc.env)); got != tc.want {
			t.Errorf("CAPTURE_WORKERS=%d files=%v GOMAXPROCS=%q: %d processors, want %d", tc.workers, tc.files, tc.env, got, tc.want)
		}
	}
}
