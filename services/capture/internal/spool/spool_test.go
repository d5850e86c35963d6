package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func entry(i, records int) Entry {
	body := bytes.Repeat([]byte{byte(i)}, 100+i%50)
	copy(body, fmt.Sprintf("entry %d", i))
	return Entry{Body: body, Records: records, Ingest: int64(1_700_000_000_000_000_000 + i)}
}

func open(t *testing.T, dir string, opt Options) *Spool {
	t.Helper()
	opt.Dir = dir
	if opt.MaxBytes == 0 {
		opt.MaxBytes = 1 << 20
	}
	s, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 8)
	c.Collect(ch)
	close(ch)
	total := 0.0
	for m := range ch {
		var d dto.Metric
		_ = m.Write(&d)
		switch {
		case d.Counter != nil:
			total += d.Counter.GetValue()
		case d.Gauge != nil:
			total += d.Gauge.GetValue()
		}
	}
	return total
}

// readAll reads every unread entry, acking those for which ack says so.
func readAll(t *testing.T, s *Spool, ack func(i int) bool) []Entry {
	t.Helper()
	var out []Entry
	for {
		e, ok, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		if ack(len(out)) {
			s.Ack(e)
		}
		out = append(out, e)
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAppendReadAckEmpties(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 1000, Fsync: FsyncBatch})
	defer s.Close()
	const n = 40
	for i := range n {
		if err := s.Append(entry(i, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Batches != n || st.Records != n*(n+1)/2 || st.Oldest != entry(0, 1).Ingest {
		t.Fatalf("stats %+v", st)
	}
	if len(segFiles(t, dir)) < 4 {
		t.Fatalf("%d segment files for %d entries of ~130 bytes with 1000-byte segments", len(segFiles(t, dir)), n)
	}
	got := readAll(t, s, func(int) bool { return false })
	if len(got) != n {
		t.Fatalf("read %d entries, want %d", len(got), n)
	}
	for i, e := range got {
		w := entry(i, i+1)
		if !bytes.Equal(e.Body, w.Body) || e.Records != w.Records || e.Ingest != w.Ingest {
			t.Fatalf("entry %d: %q/%d/%d, want %q/%d/%d", i, e.Body[:10], e.Records, e.Ingest, w.Body[:10], w.Records, w.Ingest)
		}
	}
	// Ack out of order: files go only when all of theirs are acked.
	for i := n - 1; i >= 0; i-- {
		s.Ack(got[i])
	}
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("stats after acking everything: %+v", st)
	}
	if f := segFiles(t, dir); len(f) != 0 {
		t.Fatalf("files left after every entry was acked: %v", f)
	}
	if v := value(s.m.Drained); v != n*(n+1)/2 {
		t.Fatalf("drained %v", v)
	}
	// The spool goes on after emptying.
	if err := s.Append(entry(99, 3)); err != nil {
		t.Fatal(err)
	}
	if e, ok, _ := s.Next(); !ok || e.Records != 3 {
		t.Fatalf("after emptying: %v %+v", ok, e)
	}
}

func TestReopenResendsUnacked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 600})
	for i := range 20 {
		if err := s.Append(entry(i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, s, func(i int) bool { return i < 8 }) // ack the first 8 only
	if len(got) != 20 {
		t.Fatalf("read %d", len(got))
	}
	s.Close()
	s = open(t, dir, Options{SegmentBytes: 600})
	defer s.Close()
	again := readAll(t, s, func(int) bool { return true })
	// Whole acked segments are gone; the rest comes back, in order, the
	// unacked ones all included.
	if len(again) < 12 || len(again) > 20 {
		t.Fatalf("after reopen %d entries, want 12..20", len(again))
	}
	first := 20 - len(again)
	for i, e := range again {
		if !bytes.Equal(e.Body, entry(first+i, 1).Body) {
			t.Fatalf("entry %d after reopen is %q, want entry %d", i, e.Body[:10], first+i)
		}
	}
	if f := segFiles(t, dir); len(f) != 0 {
		t.Fatalf("files left: %v", f)
	}
}

func TestTornAndDamagedEntriesSkipped(t *testing.T) {
	for _, tc := range []struct {
		name string
		harm func(b []byte) []byte
	}{
		{"torn body", func(b []byte) []byte { return b[:len(b)-7] }},
		{"torn header", func(b []byte) []byte { return b[:len(b)-int(entryHeader+len(entry(9, 1).Body))+5] }},
		{"flipped byte", func(b []byte) []byte { b[len(b)-3] ^= 0xff; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{})
			for i := range 10 {
				if err := s.Append(entry(i, 2)); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			files := segFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("files %v", files)
			}
			b, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(files[0], tc.harm(b), 0o640); err != nil {
				t.Fatal(err)
			}
			m := NewMetrics(nil)
			s = open(t, dir, Options{Metrics: m})
			defer s.Close()
			if st := s.Stats(); st.Batches != 9 || st.Records != 18 {
				t.Fatalf("after the damage: %+v, want the 9 whole batches", st)
			}
			got := readAll(t, s, func(int) bool { return true })
			if len(got) != 9 {
				t.Fatalf("read %d entries, want 9", len(got))
			}
			for i, e := range got {
				if !bytes.Equal(e.Body, entry(i, 2).Body) {
					t.Fatalf("entry %d differs", i)
				}
			}
			if v := value(m.Corrupt); v != 1 {
				t.Fatalf("corrupt_batches_total %v, want 1", v)
			}
		})
	}
}

func TestDropNewest(t *testing.T) {
	dir := t.TempDir()
	m := NewMetrics(nil)
	s := open(t, dir, Options{MaxBytes: 4096, SegmentBytes: 1024, Metrics: m})
	defer s.Close()
	total := 0
	for i := range 100 {
		total += 3
		if err := s.Append(entry(i, 3)); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Bytes > 4096 {
		t.Fatalf("spool holds %d bytes, bound 4096", st.Bytes)
	}
	got := readAll(t, s, func(int) bool { return true })
	kept := 0
	for i, e := range got {
		kept += e.Records
		if !bytes.Equal(e.Body, entry(i, 3).Body) {
			t.Fatalf("drop-newest kept entry %q at %d: the oldest must stay", e.Body[:10], i)
		}
	}
	if d := value(m.Dropped); int(d) != total-kept || d == 0 {
		t.Fatalf("dropped %v, appended %d, kept %d", d, total, kept)
	}
	if v := value(m.Dropped.WithLabelValues(ReasonFull)); v != value(m.Dropped) {
		t.Fatalf("drops not all reason=full: %v", v)
	}
}

func TestDropOldest(t *testing.T) {
	dir := t.TempDir()
	m := NewMetrics(nil)
	s := open(t, dir, Options{MaxBytes: 4096, SegmentBytes: 1024, Full: DropOldest, Metrics: m})
	defer s.Close()
	total := 0
	for i := range 100 {
		total += 3
		if err := s.Append(entry(i, 3)); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Bytes > 4096 {
			t.Fatalf("spool holds %d bytes, bound 4096", st.Bytes)
		}
	}
	got := readAll(t, s, func(int) bool { return true })
	kept := 0
	for _, e := range got {
		kept += e.Records
	}
	if last := got[len(got)-1]; !bytes.Equal(last.Body, entry(99, 3).Body) {
		t.Fatalf("drop-oldest lost the newest entry")
	}
	if d := value(m.Dropped); int(d) != total-kept || d == 0 {
		t.Fatalf("dropped %v, appended %d, kept %d", d, total, kept)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := Open(Options{Dir: dir, MaxBytes: 1 << 20}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	s2 := open(t, dir, Options{})
	s2.Close()
}

func TestScanMatchesNext(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 800})
	for i := range 30 {
		_ = s.Append(entry(i, 1))
	}
	var scanned [][]byte
	if err := Scan(dir, func(e Entry) { scanned = append(scanned, append([]byte(nil), e.Body...)) }); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, s, func(int) bool { return false })
	s.Close()
	if len(scanned) != 30 || len(got) != 30 {
		t.Fatalf("scan %d, next %d", len(scanned), len(got))
	}
	for i := range got {
		if !bytes.Equal(got[i].Body, scanned[i]) {
			t.Fatalf("entry %d differs", i)
		}
	}
}

func TestOldestAge(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1000, 0)
	s := open(t, dir, Options{Now: func() time.Time { return now }})
	defer s.Close()
	if st := s.Stats(); st.Oldest != 0 {
		t.Fatalf("empty spool oldest %d", st.Oldest)
	}
	a, b := entry(1, 1), entry(2, 1)
	a.Ingest, b.Ingest = 100, 200
	_ = s.Append(a)
	_ = s.Append(b)
	ea, _, _ := s.Next()
	eb, _, _ := s.Next()
	if st := s.Stats(); st.Oldest != 100 {
		t.Fatalf("oldest %d, want 100", st.Oldest)
	}
	s.Ack(ea)
	if st := s.Stats(); st.Oldest != 200 {
		t.Fatalf("oldest after the first ack %d, want 200", st.Oldest)
	}
	s.Ack(eb)
	if st := s.Stats(); st.Oldest != 0 {
		t.Fatalf("oldest when empty %d", st.Oldest)
	}
}
