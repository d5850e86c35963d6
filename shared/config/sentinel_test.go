package config

import "testing"

// A sentinel address keeps its comma-separated sentinels inside BACKENDS.
func TestBackendsSentinel(t *testing.T) {
	bs, err := Backends("a=127.0.0.1:6379,ha=sentinel://h1:26379,h2:26379,h3/m?db=1,b=redis://h:1", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:6379", "sentinel://h1:26379,h2:26379,h3/m?db=1", "redis://h:1"}
	if len(bs) != len(want) {
		t.Fatalf("%+v", bs)
	}
	for i, b := range bs {
		if b.Addr != want[i] {
			t.Errorf("backend %d: %q, want %q", i, b.Addr, want[i])
		}
	}
	if _, err := Backends("a=127.0.0.1:6379,h2:26379", ""); err == nil {
		t.Error("a bare host after a plain backend was taken")
	}
}
