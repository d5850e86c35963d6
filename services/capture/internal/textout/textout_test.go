package textout

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

func rec(i int) *record.Record {
	return &record.Record{
		TS: int64(1_700_000_000_000_000_000 + i), Src: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
		Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: uint16(i), DstPort: 7000, Flags: record.FlagSYN, IPLen: 60,
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *lockedBuffer) Len() int       { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Len() }

func TestWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf lockedBuffer
		tx := New(&buf)
		r := rec(1)
		r.Key = "k1"
		_ = tx.Add(context.Background(), rec(0))
		_ = tx.Add(context.Background(), r)
		if buf.Len() != 0 {
			t.Fatal("written before the flush delay")
		}
		time.Sleep(FlushDelay)
		synctest.Wait()
		want := rec(0).String() + "\n" + r.String() + "\n"
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
	recs := []record.Record{
		*rec(0), *rec(65535),
		{TS: -5, Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("2001:db8::ff"), SrcPort: 0, DstPort: 65535, Flags: 0x1ff, IPLen: 65535, Key: "abc"},
		{TS: 1, Src: netip.MustParseAddr("::ffff:1.2.3.4"), Dst: netip.MustParseAddr("fe80::1"), Flags: 0xabcd},
		{},
	}
	for _, r := range recs {
		if got, want := string(Append(nil, &r)), r.String(); got != want {
			t.Errorf("Append %q, String %q", got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Append(make([]byte, 0, 128)[:0], &recs[2]) }); n > 1 {
		t.Errorf("Append allocates %v times", n)
	}
}
