package control

import (
	"errors"
	"testing"
)

func TestApplyRuntimeOps(t *testing.T) {
	const start = "v0 mode=weighted sticky=false redis-a=30@a:6379 redis-b=70@b:6379"
	cases := []struct {
		name string
		body string
		want string // Describe after
		err  error
	}{
		{"hash by src", `{"op":"set_mode","mode":"hash"}`, "v1 mode=hash key=src sticky=false redis-a=30@a:6379 redis-b=70@b:6379", nil},
		{"hash by flow, sticky", `{"op":"set_mode","mode":"hash","hash_key":"flow","sticky":true}`, "v1 mode=hash key=flow sticky=true redis-a=30@a:6379 redis-b=70@b:6379", nil},
		{"sticky only", `{"op":"set_mode","sticky":true}`, "v1 mode=weighted sticky=true redis-a=30@a:6379 redis-b=70@b:6379", nil},
		{"weighted explicit", `{"op":"set_mode","mode":"weighted","sticky":false}`, "v1 mode=weighted sticky=false redis-a=30@a:6379 redis-b=70@b:6379", nil},
		{"unknown mode", `{"op":"set_mode","mode":"random"}`, start, ErrBadMode},
		{"unknown key", `{"op":"set_mode","mode":"hash","hash_key":"port"}`, start, ErrBadMode},
		{"bad key keeps mode", `{"op":"set_mode","mode":"hash","hash_key":"x","sticky":true}`, start, ErrBadMode},
		{"empty set_mode", `{"op":"set_mode"}`, start, ErrMalformed},
		{"sticky not bool", `{"op":"set_mode","sticky":"yes"}`, start, ErrMalformed},
		{"add", `{"op":"add_backend","backend":{"name":"redis-c","addr":"127.0.0.1:6381","weight":50}}`,
			"v1 mode=weighted sticky=false redis-a=30@a:6379 redis-b=70@b:6379 redis-c=50@127.0.0.1:6381", nil},
		{"add sorts by name", `{"op":"add_backend","backend":{"name":"redis-0","addr":"[::1]:6390","weight":0}}`,
			"v1 mode=weighted sticky=false redis-0=0@[::1]:6390 redis-a=30@a:6379 redis-b=70@b:6379", nil},
		{"add duplicate", `{"op":"add_backend","backend":{"name":"redis-a","addr":"127.0.0.1:6381","weight":50}}`, start, ErrDuplicate},
		{"add bad name", `{"op":"add_backend","backend":{"name":"redis c","addr":"127.0.0.1:6381"}}`, start, ErrBadBackend},
		{"add long name", `{"op":"add_backend","backend":{"name":"` + string(make65()) + `","addr":"127.0.0.1:6381"}}`, start, ErrBadBackend},
		{"add empty name", `{"op":"add_backend","backend":{"name":"","addr":"127.0.0.1:6381"}}`, start, ErrBadBackend},
		{"add no port", `{"op":"add_backend","backend":{"name":"redis-c","addr":"127.0.0.1"}}`, start, ErrBadBackend},
		{"add port 0", `{"op":"add_backend","backend":{"name":"redis-c","addr":"h:0"}}`, start, ErrBadBackend},
		{"add no host", `{"op":"add_backend","backend":{"name":"redis-c","addr":":6381"}}`, start, ErrBadBackend},
		{"add no addr", `{"op":"add_backend","backend":{"name":"redis-c","weight":5}}`, start, ErrBadBackend},
		{"add heavy", `{"op":"add_backend","backend":{"name":"redis-c","addr":"c:1","weight":257}}`, start, ErrBadWeight},
		{"add without backend", `{"op":"add_backend"}`, start, ErrMalformed},
		{"add unknown field", `{"op":"add_backend","backend":{"name":"redis-c","address":"c:1"}}`, start, ErrMalformed},
		{"remove", `{"op":"remove_backend","name":"redis-a"}`, "v1 mode=weighted sticky=false redis-b=70@b:6379", nil},
		{"remove unknown", `{"op":"remove_backend","name":"redis-z"}`, start, ErrUnknownBackend},
		{"remove without name", `{"op":"remove_backend"}`, start, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := table(t)
			after, res := Apply(before, 9, []byte(c.body))
			if !errors.Is(res.Err, c.err) || (c.err == nil && res.Err != nil) {
				t.Fatalf("verdict %v, want %v", res.Err, c.err)
			}
			if got := after.Describe(); got != c.want || after.Position != 9 {
				t.Fatalf("after: %s pos %d, want %s pos 9", got, after.Position, c.want)
			}
			if res.Changed != (c.err == nil) {
				t.Fatalf("Changed=%v", res.Changed)
			}
			if before.Describe() != start {
				t.Fatalf("Apply modified its input: %s", before.Describe())
			}
		})
	}
}

func make65() []byte {
	b := make([]byte, MaxNameLen+1)
	for i := range b {
		b[i] = 'x'
	}
	return b
}

func TestRemoveLastCapacity(t *testing.T) {
	tb := table(t)
	steps := []struct {
		body string
		err  error
	}{
		{`{"op":"set_weights","weights":{"redis-b":0}}`, nil},
		{`{"op":"remove_backend","name":"redis-a"}`, ErrNoCapacity}, // only redis-b (weight 0) would remain
		{`{"op":"remove_backend","name":"redis-b"}`, nil},           // a drained one goes
		{`{"op":"remove_backend","name":"redis-a"}`, ErrNoCapacity}, // the last one stays
		{`{"op":"add_backend","backend":{"name":"redis-b","addr":"b2:6379","weight":5}}`, nil},
	}
	for i, s := range steps {
		var res Result
		tb, res = Apply(tb, int64(i), []byte(s.body))
		if !errors.Is(res.Err, s.err) || (s.err == nil && res.Err != nil) {
			t.Fatalf("step %d %s: verdict %v, want %v", i, s.body, res.Err, s.err)
		}
	}
	if got := tb.Describe(); got != "v3 mode=weighted sticky=false redis-a=30@a:6379 redis-b=5@b2:6379" {
		t.Fatalf("after: %s", got)
	}
	if tb.String() != "redis-a=30 redis-b=5" {
		t.Fatalf("String changed shape: %s", tb)
	}
}

func TestModeZeroValues(t *testing.T) {
	tb := table(t)
	if tb.RoutingMode() != ModeWeighted || tb.Key() != KeySrc || tb.Sticky {
		t.Fatalf("defaults: %s", tb.Describe())
	}
	after, res := Apply(tb, 0, []byte(`{"op":"set_mode","mode":"hash","hash_key":"pair"}`))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	// Fields left out keep their value.
	after, res = Apply(after, 1, []byte(`{"op":"set_mode","sticky":true}`))
	if res.Err != nil || after.RoutingMode() != ModeHash || after.Key() != KeyPair || !after.Sticky {
		t.Fatalf("%v %s", res.Err, after.Describe())
	}
}
