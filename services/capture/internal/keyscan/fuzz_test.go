package keyscan

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// The fuzz target's rule and metrics, made once: compiling and registering
// them for every input would take most of each execution.
var (
	fuzzRule    = mustRule(soapRule)
	fuzzMetrics = NewMetrics(nil)
)

// scanRun carries body over one connection cut at sizes (cycled), in
// order or in a scrambled order, then a FIN, and closes the scanner. It
// returns the records released and the key of the first.
func scanRun(t *testing.T, body []byte, sizes []int, scramble bool) (int, string, Stats) {
	clk := newClock()
	out := &sink{}
	s := New(Config{Rule: fuzzRule, ScanBytes: 512, Wait: time.Hour, Now: clk.now, Metrics: fuzzMetrics}, out)
	c := newClient("10.0.7.1", 47000, 9)
	pkts := []pkt{c.syn(), c.ack()}
	var data []pkt
	for i, k := 0, 0; i < len(body); k++ {
		n := min(sizes[k%len(sizes)], len(body)-i)
		data = append(data, c.data(string(body[i:i+n])))
		i += n
	}
	if scramble {
		// Odd-numbered segments first, then the even ones backwards.
		var odd, even []pkt
		for i, p := range data {
			if i%2 == 1 {
				odd = append(odd, p)
			} else {
				even = append(even, p)
			}
		}
		slices.Reverse(even)
		data = append(odd, even...)
	}
	pkts = append(append(pkts, data...), c.fin())
	for _, p := range pkts {
		p.rec.TS = clk.ts()
		if err := s.Packet(context.Background(), &p.rec, p.seg); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Bytes > s.cfg.MaxBytes || st.Bytes < 0 {
			t.Fatalf("%d bytes counted, bound %d", st.Bytes, s.cfg.MaxBytes)
		}
	}
	st := s.Stats()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(out.recs) != len(pkts) {
		t.Fatalf("released %d of %d records", len(out.recs), len(pkts))
	}
	for i := range out.recs {
		if out.recs[i].Key != out.recs[0].Key {
			t.Fatalf("record %d key %q, record 0 %q", i, out.recs[i].Key, out.recs[0].Key)
		}
	}
	return len(out.recs), out.recs[0].Key, st
}

// FuzzScanner: however the stream is cut and reordered, the scanner
// releases every record once, keeps within its bound, and finds the key a
// single segment gives (for the SOAP rule, a match cannot hide inside an
// earlier one, so the key does not depend on where scans happen).
func FuzzScanner(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\n\r\n<Envelope><SessionId>abc-42</SessionId></Envelope>"), []byte{1}, false)
	f.Add([]byte("<SessionId>a</SessionId><SessionId>b</SessionId>"), []byte{3, 7}, true)
	f.Add(bytes.Repeat([]byte("x"), 600), []byte{200}, false)
	f.Add([]byte("<SessionId><SessionId>k</SessionId"), []byte{}, true)
	f.Fuzz(func(t *testing.T, body, cuts []byte, scramble bool) {
		if len(body) == 0 || len(body) > 4096 {
			return
		}
		sizes := []int{len(body)}
		if len(cuts) > 0 {
			sizes = sizes[:0]
			for _, c := range cuts[:min(len(cuts), 64)] {
				sizes = append(sizes, 1+int(c)%97)
			}
		}
		_, want, _ := scanRun(t, body, []int{len(body)}, false)
		_, got, _ := scanRun(t, body, sizes, scramble)
		if got != want {
			t.Fatalf("cut at %v (scrambled %v): key %q, one segment gives %q", sizes, scramble, got, want)
		}
		if got != "" && !bytes.Contains(body, []byte(got)) {
			t.Fatalf("key %q is not in the stream", got)
		}
		if len(got) > record.MaxKeyLen {
			t.Fatalf("key of %d bytes", len(got))
		}
	})
}
