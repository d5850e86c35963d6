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
	for _, name := range []string{control.KeySrc, control.KeyDst, control.KeyPair, control.KeyFlow} {
		f, err := KeyFor(name)
		if err != nil {
			t.Fatal(err)
		}
		field, _ := fieldKey(name)
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
