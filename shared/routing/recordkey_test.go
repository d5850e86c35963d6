package routing

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
)

// TestRecordKey: a record with a payload key routes by it, whatever its
// addresses; one without routes by the table's field.
func TestRecordKey(t *testing.T) {
	a := record.Record{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.9"), SrcPort: 1, DstPort: 2}
	b := record.Record{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.9"), SrcPort: 3, DstPort: 2}
	for _, row := range control.HashKeys() {
		name := row.Key
		f, err := KeyFor(name)
		if err != nil {
			t.Fatal(err)
		}
		field := HashFields(row.Fields)
		if f(&a) != field(&a) {
			t.Errorf("%s: a record without a key does not route by the field", name)
		}
		ka, kb := a, b
		ka.Key, kb.Key = "sess-1", "sess-1"
		if f(&ka) != f(&kb) || f(&ka) != HashRecordKey("sess-1") {
			t.Errorf("%s: one key, two hashes", name)
		}
		kb.Key = "sess-2"
		if f(&ka) == f(&kb) {
			t.Errorf("%s: two keys, one hash", name)
		}
	}
}

// TestRecordKeySpread: keys spread over the ring by its weights.
func TestRecordKeySpread(t *testing.T) {
	tbl := &control.Table{Mode: control.ModeHash, Backends: []control.Backend{{Name: "a", Addr: "x:1", Weight: 1}, {Name: "b", Addr: "x:2", Weight: 3}}}
	r, err := NewRing(tbl)
	if err != nil {
		t.Fatal(err)
	}
	n := [2]int{}
	for i := range 20000 {
		n[r.Pick(HashRecordKey("session-"+strconv.Itoa(i)))]++
	}
	if share := float64(n[1]) / 20000; share < 0.72 || share > 0.78 {
		t.Fatalf("share of b = %.3f, want about 0.75", share)
	}
}

// TestHashFieldsIsTheWrittenOutSums: the hash of any set of fields is the
// one the written-out functions give for the sets the table has, so a key
// of a new row hashes the same way whatever its fields, and the sums of
// the rows in use never change (rings and stick tables depend on them).
func TestHashFieldsIsTheWrittenOutSums(t *testing.T) {
	r := record.Record{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("2001:db8::9"), SrcPort: 40000, DstPort: 443}
	for _, c := range []struct {
		f    control.Fields
		want KeyFunc
	}{
		{control.FieldSrc, HashSrc},
		{control.FieldDst, HashDst},
		{control.FieldSrc | control.FieldDst, HashPair},
		{control.FieldSrc | control.FieldDst | control.FieldPorts, HashFlow},
	} {
		if got, want := hashFields(c.f, &r), c.want(&r); got != want {
			t.Errorf("fields %v: %#x, written out %#x", c.f.Names(), got, want)
		}
	}
	// A set no row has yet goes the generic way and still depends on its
	// fields only.
	f := HashFields(control.FieldDst | control.FieldPorts)
	other := r
	other.Src = netip.MustParseAddr("10.9.9.9")
	if f(&r) != f(&other) {
		t.Error("dst+ports depends on the source")
	}
	other.DstPort++
	if f(&r) == f(&other) {
		t.Error("dst+ports ignores the port")
	}
	for _, row := range control.HashKeys() {
		if row.Fields == 0 {
			t.Errorf("hash key %s hashes no field", row.Key)
		}
	}
}
