package textout

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
)

// recs are records of every shape the text form has: IPv4 and IPv6, a
// key column or none, extreme values, and the zero record.
var recs = []record.Record{
	{TS: 1_700_000_000_000_000_000, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), DstPort: 7000, Flags: record.FlagSYN, IPLen: 60},
	{TS: 1_700_000_000_000_000_001, Src: netip.MustParseAddr("10.0.255.255"), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: 65535, DstPort: 7000, Flags: record.FlagSYN, IPLen: 60, Key: "k1"},
	{TS: -5, Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("2001:db8::ff"), SrcPort: 0, DstPort: 65535, Flags: 0x1ff, IPLen: 65535, Key: "abc"},
	{TS: 1, Src: netip.MustParseAddr("::ffff:1.2.3.4"), Dst: netip.MustParseAddr("fe80::1"), Flags: 0xabcd},
	{},
}

func TestWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf testenv.Buffer
		tx := New(&buf)
		_ = tx.Add(context.Background(), &recs[0])
		_ = tx.Add(context.Background(), &recs[1])
		if buf.String() != "" {
			t.Fatal("written before the flush delay")
		}
		time.Sleep(FlushDelay)
		synctest.Wait()
		want := recs[0].String() + "\n" + recs[1].String() + "\n"
		if buf.String() != want {
			t.Fatalf("got %q, want %q", buf.String(), want)
		}
		if !strings.HasSuffix(strings.Split(buf.String(), "\n")[1], "\tk1") {
			t.Fatal("key column missing")
		}
		_ = tx.Close(context.Background())
	})
}

// TestAppend: the allocation-free text form equals Record.String.
func TestAppend(t *testing.T) {
	for _, r := range recs {
		if got, want := string(Append(nil, &r)), r.String(); got != want {
			t.Errorf("Append %q, String %q", got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Append(make([]byte, 0, 128)[:0], &recs[2]) }); n > 1 {
		t.Errorf("Append allocates %v times", n)
	}
}
