package record

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// hostileArray is `[{},{},…]` of about n bytes.
func hostileArray(n int) []byte {
	b := make([]byte, 0, n+3)
	b = append(b, '[')
	for len(b) < n {
		b = append(b, "{},"...)
	}
	b[len(b)-1] = ']'
	return b
}

// A 16 MiB array of empty objects is refused at its first element: the
// decoder allocates a few kilobytes, not gigabytes.
func TestJSONHostileArrayIsCheap(t *testing.T) {
	body := hostileArray(16 << 20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var b Batch
	err := DecodeJSON(body, &b)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrBadJSON) || !strings.Contains(err.Error(), "record 0") {
		t.Fatalf("err %v, want bad JSON at record 0", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("16 MiB hostile array: %d bytes allocated by the decoder", alloc)
	if alloc > 1<<20 {
		t.Fatalf("decoder allocated %d bytes for a body it refuses at its first element", alloc)
	}
}

// An array of valid records is cut at MaxJSONRecords.
func TestJSONElementCap(t *testing.T) {
	const one = `{"ts_ns":1,"src_ip":"1.2.3.4","dst_ip":"5.6.7.8","src_port":1,"dst_port":2}`
	build := func(n int) []byte {
		var w bytes.Buffer
		w.WriteByte('[')
		for i := range n {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(one)
		}
		w.WriteByte(']')
		return w.Bytes()
	}
	var b Batch
	if err := DecodeJSON(build(MaxJSONRecords), &b); err != nil || len(b.Records) != MaxJSONRecords {
		t.Fatalf("%d records: err %v, decoded %d", MaxJSONRecords, err, len(b.Records))
	}
	b = Batch{}
	err := DecodeJSON(build(MaxJSONRecords+1), &b)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d records: err %v, want %v", MaxJSONRecords+1, err, ErrTooLarge)
	}
	if len(b.Records) > MaxJSONRecords {
		t.Fatalf("kept %d records past the cap", len(b.Records))
	}
}

func TestJSONStreamEdges(t *testing.T) {
	const one = `{"ts_ns":1,"src_ip":"1.2.3.4","dst_ip":"5.6.7.8","src_port":1,"dst_port":2}`
	cases := []struct {
		body string
		n    int
		err  error
	}{
		{" \n" + one + "\n", 1, nil},
		{"[" + one + "," + one + "]", 2, nil},
		{"[" + one + "] ", 1, nil},
		{one + one, 0, ErrBadJSON},
		{"[" + one + "] x", 0, ErrBadJSON},
		{"[" + one + "", 0, ErrBadJSON},
		{"[" + one + ",]", 0, ErrBadJSON},
		{"[1,2]", 0, ErrBadJSON},
		{"[[[[", 0, ErrBadJSON},
		{" [ ] ", 0, ErrNoRecords},
		{"", 0, ErrBadJSON},
		{"null", 0, ErrBadJSON},
	}
	for _, c := range cases {
		var b Batch
		err := DecodeJSON([]byte(c.body), &b)
		if !errors.Is(err, c.err) || (c.err == nil && len(b.Records) != c.n) {
			t.Errorf("%q: err %v (want %v), %d records (want %d)", c.body, err, c.err, len(b.Records), c.n)
		}
	}
}

// FuzzDecodeJSON: any body either fails with one of the package's errors
// or yields records that survive the JSON form and the binary entry form.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"ts_ns":1700000000000000001,"src_ip":"10.1.2.3","dst_ip":"10.0.0.1","src_port":40000,"dst_port":7000}`,
		`[{"ts_ns":"5","src_ip":"::1","dst_ip":"1.2.3.4","src_port":1,"dst_port":2,"tcp_flags":18,"ip_len":60,"key":"k"}]`,
		`[{},{},{}]`, `[]`, `[[[`, `{"ts_ns":1e3}`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b Batch
		err := DecodeJSON(body, &b)
		if err != nil {
			if !errors.Is(err, ErrBadJSON) && !errors.Is(err, ErrNoRecords) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error outside the package's set: %v", err)
			}
			return
		}
		if len(b.Records) == 0 || len(b.Records) > MaxJSONRecords {
			t.Fatalf("%d records without an error", len(b.Records))
		}
		for i := range b.Records {
			r := &b.Records[i]
			j := ToJSON(r)
			back, err := j.Record()
			if err != nil || fmt.Sprint(back) != fmt.Sprint(*r) {
				t.Fatalf("record %d: JSON round trip %v: %v != %v", i, err, back, *r)
			}
			var got Record
			n, err := DecodeEntry(AppendEntry(nil, r), &got)
			if err != nil || n != EntrySize(r) || fmt.Sprint(got) != fmt.Sprint(*r) {
				t.Fatalf("record %d: entry round trip %v: %v != %v", i, err, got, *r)
			}
		}
	})
}

// FuzzDecodeEntries: the entry decoder (what admin reads back from Redis)
// never panics, fails only with the package's errors, and what it decodes
// re-encodes to entries that decode to the same records (the bytes may
// differ: IPv4-mapped IPv6 addresses come back as IPv4).
func FuzzDecodeEntries(f *testing.F) {
	var seed []byte
	for i := range sample() {
		seed = AppendEntry(seed, &sample()[i])
	}
	f.Add(seed)
	f.Add([]byte{0})
	f.Add([]byte{kindHasKey, 1, 2, 3})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var recs []Record
		err := DecodeEntries(b, func(r *Record) { recs = append(recs, *r) })
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrBadEntry) {
			t.Fatalf("error outside the package's set: %v", err)
		}
		var re []byte
		for i := range recs {
			re = AppendEntry(re, &recs[i])
		}
		var again []Record
		if err := DecodeEntries(re, func(r *Record) { again = append(again, *r) }); err != nil {
			t.Fatalf("re-encoded entries do not decode: %v", err)
		}
		if fmt.Sprint(again) != fmt.Sprint(recs) {
			t.Fatalf("records change through a re-encode:\n%v\n%v", recs, again)
		}
	})
}
