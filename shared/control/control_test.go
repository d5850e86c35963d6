package control

import (
	"errors"
	"testing"
)

func table(t *testing.T) *Table {
	t.Helper()
	tb, err := NewTable([]Backend{{Name: "redis-b", Addr: "b:6379", Weight: 70}, {Name: "redis-a", Addr: "a:6379", Weight: 30}})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestApply(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		want    string // table after
		version int64
		err     error
	}{
		{"set both", `{"op":"set_weights","weights":{"redis-a":50,"redis-b":50}}`, "redis-a=50 redis-b=50", 1, nil},
		{"set one keeps the other", `{"op":"set_weights","weights":{"redis-a":1}}`, "redis-a=1 redis-b=70", 1, nil},
		{"drain one", `{"op":"set_weights","weights":{"redis-a":0}}`, "redis-a=0 redis-b=70", 1, nil},
		{"max weight", `{"op":"set_weights","weights":{"redis-a":256}}`, "redis-a=256 redis-b=70", 1, nil},
		{"expected version matches", `{"op":"set_weights","weights":{"redis-a":5},"expect_version":0}`, "redis-a=5 redis-b=70", 1, nil},
		{"sync marker", `{"op":"sync","id":"x"}`, "redis-a=30 redis-b=70", 0, nil},
		{"weight 300", `{"op":"set_weights","weights":{"redis-a":300}}`, "redis-a=30 redis-b=70", 0, ErrBadWeight},
		{"negative", `{"op":"set_weights","weights":{"redis-a":-1}}`, "redis-a=30 redis-b=70", 0, ErrBadWeight},
		{"unknown backend", `{"op":"set_weights","weights":{"redis-c":5,"redis-a":5}}`, "redis-a=30 redis-b=70", 0, ErrUnknownBackend},
		{"all zero", `{"op":"set_weights","weights":{"redis-a":0,"redis-b":0}}`, "redis-a=30 redis-b=70", 0, ErrNoCapacity},
		{"stale", `{"op":"set_weights","weights":{"redis-a":5},"expect_version":3}`, "redis-a=30 redis-b=70", 0, ErrStaleVersion},
		{"broken json", `{"op":"set_weights",`, "redis-a=30 redis-b=70", 0, ErrMalformed},
		{"misspelt field", `{"op":"set_weights","weigths":{"redis-a":5}}`, "redis-a=30 redis-b=70", 0, ErrMalformed},
		{"fractional weight", `{"op":"set_weights","weights":{"redis-a":2.5}}`, "redis-a=30 redis-b=70", 0, ErrMalformed},
		{"no op", `{"weights":{"redis-a":5}}`, "redis-a=30 redis-b=70", 0, ErrMalformed},
		{"unknown op", `{"op":"drop_tables"}`, "redis-a=30 redis-b=70", 0, ErrUnknownOp},
		{"empty weights", `{"op":"set_weights","weights":{}}`, "redis-a=30 redis-b=70", 0, ErrMalformed},
		{"two objects", `{"op":"sync"}{"op":"sync"}`, "redis-a=30 redis-b=70", 0, ErrMalformed},
		{"not an object", `[1,2]`, "redis-a=30 redis-b=70", 0, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := table(t)
			after, res := Apply(before, 7, []byte(c.body))
			if !errors.Is(res.Err, c.err) || (c.err == nil && res.Err != nil) {
				t.Fatalf("verdict %v, want %v", res.Err, c.err)
			}
			if after.String() != c.want || after.Version != c.version || after.Position != 7 {
				t.Fatalf("after: %s v%d pos %d, want %s v%d pos 7", after, after.Version, after.Position, c.want, c.version)
			}
			if res.Changed != (c.version == 1) {
				t.Fatalf("Changed=%v", res.Changed)
			}
			if before.String() != "redis-a=30 redis-b=70" || before.Version != 0 {
				t.Fatalf("Apply modified its input: %s", before)
			}
		})
	}
}

func TestFoldIsDeterministic(t *testing.T) {
	log := []string{
		`{"op":"set_weights","weights":{"redis-a":50,"redis-b":50}}`,
		`{"op":"set_weights","weights":{"redis-a":10},"expect_version":0}`, // stale: table is at 1
		`garbage`,
		`{"op":"set_weights","weights":{"redis-a":10},"expect_version":1}`,
	}
	fold := func() *Table {
		tb := table(t)
		for i, m := range log {
			tb, _ = Apply(tb, int64(i), []byte(m))
		}
		return tb
	}
	a, b := fold(), fold()
	if a.String() != "redis-a=10 redis-b=50" || a.Version != 2 || a.Position != 3 {
		t.Fatalf("fold gave %s v%d pos %d", a, a.Version, a.Position)
	}
	if a.String() != b.String() || a.Version != b.Version {
		t.Fatal("two folds of one log differ")
	}
}

func TestNewTableRejects(t *testing.T) {
	for name, bs := range map[string][]Backend{
		"none":      nil,
		"duplicate": {{Name: "a", Weight: 1}, {Name: "a", Weight: 1}},
		"too heavy": {{Name: "a", Weight: 257}},
		"all zero":  {{Name: "a"}, {Name: "b"}},
	} {
		if _, err := NewTable(bs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"op":"set_weights","weights":{"redis-a":50}}`))
	f.Add([]byte(`{"op":"sync","id":"x"}`))
	f.Add([]byte(`{"op":"set_mode","mode":"hash","hash_key":"flow","sticky":true}`))
	f.Add([]byte(`{"op":"add_backend","backend":{"name":"redis-c","addr":"127.0.0.1:6381","weight":50}}`))
	f.Add([]byte(`{"op":"remove_backend","name":"redis-a"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tb, err := NewTable([]Backend{{Name: "redis-a", Weight: 30}, {Name: "redis-b", Weight: 70}})
		if err != nil {
			t.Fatal(err)
		}
		after, res := Apply(tb, 1, body)
		total := 0
		for _, b := range after.Backends {
			if b.Weight < 0 || b.Weight > MaxWeight {
				t.Fatalf("weight %d escaped validation", b.Weight)
			}
			total += b.Weight
		}
		if total == 0 {
			t.Fatal("fold produced a table with no capacity")
		}
		if res.Err != nil && after.Version != tb.Version {
			t.Fatal("refused message changed the version")
		}
	})
}
