package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func marshal(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTable(t *testing.T, spec ...Backend) *Table {
	t.Helper()
	tb, err := NewTable(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestSeedMakesEveryReaderFoldTheLogsTable: two readers started with
// different environments fold one log to the same routing.
func TestSeedMakesEveryReaderFoldTheLogsTable(t *testing.T) {
	adminEnv := newTable(t, Backend{Name: "redis-a", Addr: "a:6379", Weight: 30}, Backend{Name: "redis-b", Addr: "b:6379", Weight: 70})
	otherEnv := newTable(t, Backend{Name: "redis-a", Addr: "a:6379", Weight: 50}, Backend{Name: "redis-x", Addr: "x:6379", Weight: 50})
	log := [][]byte{
		marshal(t, Seed(adminEnv, "admin")),
		marshal(t, Seed(otherEnv, "late admin")), // loses: the log has its table
		[]byte(`{"op":"set_weights","weights":{"redis-a":50,"redis-b":50}}`),
		marshal(t, Seed(otherEnv, "later still")), // loses: stale
	}
	fold := func(start *Table) (*Table, []Result) {
		var rs []Result
		tb := start
		for i, b := range log {
			var r Result
			tb, r = Apply(tb, int64(i), b)
			rs = append(rs, r)
		}
		return tb, rs
	}
	a, ra := fold(adminEnv)
	o, ro := fold(otherEnv)
	if !SameRouting(a, o) || a.Version != o.Version || a.Version != 1 || !a.Seeded {
		t.Fatalf("readers disagree: %s (seeded %v) vs %s", a.Describe(), a.Seeded, o.Describe())
	}
	if a.String() != "redis-a=50 redis-b=50" {
		t.Errorf("table %s, want redis-a=50 redis-b=50", a.String())
	}
	// The admin's own reader sees no routing change from its seed; the
	// other sees its table replaced.
	if ra[0].Changed || !ro[0].Changed || ra[0].Err != nil || ro[0].Err != nil {
		t.Errorf("seed verdicts: admin %+v, other %+v", ra[0], ro[0])
	}
	if !errors.Is(ra[1].Err, ErrSeeded) || !errors.Is(ra[3].Err, ErrStaleVersion) {
		t.Errorf("later seeds: %v, %v; want ErrSeeded, then a stale version", ra[1].Err, ra[3].Err)
	}
}

func TestBackendsAreCapped(t *testing.T) {
	tb := newTable(t, Backend{Name: "redis-a", Addr: "a:6379", Weight: 1})
	for i := 1; i < MaxBackends; i++ {
		var r Result
		tb, r = Apply(tb, int64(i), []byte(fmt.Sprintf(`{"op":"add_backend","backend":{"name":"r%d","addr":"h:%d"}}`, i, 1000+i)))
		if r.Err != nil {
			t.Fatalf("add %d: %v", i, r.Err)
		}
	}
	_, r := Apply(tb, 99, []byte(`{"op":"add_backend","backend":{"name":"one-more","addr":"h:1"}}`))
	if !errors.Is(r.Err, ErrTooMany) {
		t.Fatalf("backend %d: %v, want ErrTooMany", MaxBackends+1, r.Err)
	}
	var many []Backend
	for i := range MaxBackends + 1 {
		many = append(many, Backend{Name: fmt.Sprintf("r%d", i), Addr: fmt.Sprintf("h:%d", 1000+i), Weight: 1})
	}
	seed := Message{Op: OpSeed, Table: &Table{Backends: many}}
	_, r = Apply(newTable(t, Backend{Name: "redis-a", Addr: "a:6379", Weight: 1}), 0, marshal(t, seed))
	if !errors.Is(r.Err, ErrTooMany) {
		t.Fatalf("seed with %d backends: %v, want ErrTooMany", len(many), r.Err)
	}
}
