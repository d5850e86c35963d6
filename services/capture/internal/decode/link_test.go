package decode

import (
	"testing"

	"github.com/connpipe/connpipe/shared/record"
)

// TestLinkTable checks the table's rows against what reads them: each row
// is found by its link type and by nothing else, its name is its String,
// a frame one byte short of its header is StatusLinkTruncated, and its
// decoder reads no further than the header on a frame that long (the fuzz
// target covers longer ones).
func TestLinkTable(t *testing.T) {
	seen := map[LinkType]bool{}
	for i := range links {
		l := &links[i]
		if seen[l.lt] {
			t.Fatalf("%v (%d): two rows", l.lt, uint32(l.lt))
		}
		seen[l.lt] = true
		if lookup(l.lt) != l || !Supported(l.lt) {
			t.Fatalf("%s (%d): lookup does not find its row", l.name, uint32(l.lt))
		}
		if l.lt.String() != l.name || l.name == "" {
			t.Errorf("%d: String %q, row name %q", uint32(l.lt), l.lt, l.name)
		}
		var r record.Record
		if l.header > 0 {
			if st := Decode(l.lt, make([]byte, l.header-1), &r); st != StatusLinkTruncated {
				t.Errorf("%v: a frame of %d bytes gives %v, want %v", l.lt, l.header-1, st, StatusLinkTruncated)
			}
		}
		if st := Decode(l.lt, make([]byte, l.header), &r); st == StatusOK {
			t.Errorf("%v: a frame of zeros gives a record", l.lt)
		}
		if fr, ok := l.lt.Framing(); ok && fr.EtherTypeAt >= 0 && fr.EtherTypeAt+2 > fr.IPAt {
			t.Errorf("%v: framing %+v has the EtherType past the IP header", l.lt, fr)
		}
	}
	for _, lt := range []LinkType{9, 10, LinkPPPHDLC, LinkUnknown, 300, LinkType(len(linkIndex))} {
		if Supported(lt) || lookup(lt) != nil {
			t.Errorf("%v (%d): supported without a row", lt, uint32(lt))
		}
	}
	if Decode(LinkType(9), make([]byte, 64), new(record.Record)) != StatusUnsupportedLink {
		t.Error("a link type without a row is not StatusUnsupportedLink")
	}
}

// TestLinkOfARPHRD: live capture's hardware types map to the rows that
// name them, and every such row has a kernel framing.
func TestLinkOfARPHRD(t *testing.T) {
	for _, tt := range []struct {
		arphrd uint16
		want   LinkType
		ok     bool
	}{
		{1, LinkEthernet, true},      // ARPHRD_ETHER
		{772, LinkEthernet, true},    // ARPHRD_LOOPBACK
		{0xfffe, LinkRaw, true},      // ARPHRD_NONE (tun)
		{519, LinkRaw, true},         // ARPHRD_RAWIP
		{32, LinkUnknown, false},     // ARPHRD_INFINIBAND
		{824, LinkUnknown, false},    // ARPHRD_NETLINK
		{0xffff, LinkUnknown, false}, // ARPHRD_VOID
	} {
		got, ok := LinkOfARPHRD(tt.arphrd)
		if got != tt.want || ok != tt.ok {
			t.Errorf("LinkOfARPHRD(%d) = %v, %v; want %v, %v", tt.arphrd, got, ok, tt.want, tt.ok)
		}
	}
	live := LiveLinks()
	if len(live) != 2 {
		t.Fatalf("live link types %v, want Ethernet and Raw", live)
	}
	for _, lt := range live {
		if _, ok := lt.Framing(); !ok {
			t.Errorf("%v: opened live but has no kernel framing", lt)
		}
	}
	if fr, _ := LinkEthernet.Framing(); fr != (Framing{EtherTypeAt: 12, IPAt: 14}) {
		t.Errorf("Ethernet framing %+v", fr)
	}
	if fr, _ := LinkRaw.Framing(); fr != (Framing{EtherTypeAt: -1, IPAt: 0}) {
		t.Errorf("raw framing %+v", fr)
	}
}
