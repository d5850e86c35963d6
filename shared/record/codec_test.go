package record

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func sample() []Record {
	return []Record{
		{TS: 1700000000123456789, Src: netip.MustParseAddr("127.0.3.4"), Dst: netip.MustParseAddr("127.0.0.1"),
			SrcPort: 51234, DstPort: 7000, Flags: FlagSYN, IPLen: 60},
		{TS: 1700000000223456789, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("::1"),
			SrcPort: 1, DstPort: 65535, Flags: FlagACK | FlagPSH | FlagNS, IPLen: 1500, Key: "session-42"},
		{TS: 1, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("::1"), SrcPort: 80, DstPort: 443},
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	var e Encoder
	e.Reset(1700000001000000000)
	for i := range sample() {
		r := sample()[i]
		e.Add(&r)
	}
	var b Batch
	if err := DecodeBinary(e.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if b.Ingest != 1700000001000000000 || len(b.Records) != 3 {
		t.Fatalf("ingest %d, %d records", b.Ingest, len(b.Records))
	}
	want := sample()
	// A mixed-family record is stored as IPv6 and read back unmapped.
	for i := range want {
		if b.Records[i] != want[i] {
			t.Errorf("record %d: got %+v want %+v", i, b.Records[i], want[i])
		}
	}
	if n := EntrySize(&want[0]); n != 25 {
		t.Errorf("IPv4 entry is %d bytes, documented 25", n)
	}
}

// A version 2 batch carries its identity and lengths over 65,535 (big TCP,
// jumbograms); a version 1 batch still decodes, with ip_len capped.
func TestBinaryV2IdentityAndWideLength(t *testing.T) {
	var e Encoder
	id := ID{Producer: 0xdeadbeefcafe, Seq: 42}
	e.ResetID(7, id, 1<<40)
	big := sample()[0]
	big.IPLen = 70040
	e.Add(&big)
	var b Batch
	if err := Decode(ContentTypeBinary, e.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if b.ID != id || b.First != 1<<40 || b.Records[0].IPLen != 70040 {
		t.Fatalf("id %+v ip_len %d, want %+v 70040", b.ID, b.Records[0].IPLen, id)
	}
	var old Batch
	if err := Decode(ContentTypeBinaryV1, AppendBatchV1(nil, 7, []Record{big, sample()[1]}), &old); err != nil {
		t.Fatal(err)
	}
	if !old.ID.IsZero() || old.Records[0].IPLen != MaxIPLen16 || old.Records[1] != sample()[1] {
		t.Fatalf("v1 batch read as %+v", old)
	}
	var j Batch
	if err := DecodeJSON([]byte(`{"ts_ns":1,"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","src_port":1,"dst_port":2,"ip_len":70040}`), &j); err != nil || j.Records[0].IPLen != 70040 {
		t.Fatalf("JSON ip_len 70040: %v %+v", err, j.Records)
	}
}

func TestBinaryRejectsBadInput(t *testing.T) {
	var e Encoder
	e.Reset(5)
	r := sample()[0]
	e.Add(&r)
	good := append([]byte(nil), e.Bytes()...)
	cases := map[string]struct {
		body []byte
		want error
	}{
		"empty":          {nil, ErrTruncated},
		"bad magic":      {[]byte("GET / HTTP/1.1\r\n\r\nxxxxxxxx"), ErrBadMagic},
		"version 3":      {append(append([]byte{}, good[:4]...), append([]byte{3}, good[5:]...)...), ErrVersion},
		"v2 cut header":  {good[:40], ErrTruncated},
		"cut entry":      {good[:len(good)-3], ErrTruncated},
		"trailing bytes": {append(append([]byte{}, good...), 0), ErrBadEntry},
		"huge count":     {append(append([]byte{}, good[:8]...), append([]byte{0xff, 0xff, 0xff, 0xff}, good[12:]...)...), ErrTooLarge},
		"bad kind":       {append(append([]byte{}, good[:44]...), append([]byte{0x80}, good[45:]...)...), ErrBadEntry},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var b Batch
			err := DecodeBinary(c.body, &b)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	cases := []struct {
		name, body, errPart string
		n                   int
	}{
		{"one", `{"ts_ns":1700000000000000001,"src_ip":"10.1.2.3","dst_ip":"10.0.0.1","src_port":40000,"dst_port":7000}`, "", 1},
		{"array with key", `[{"ts_ns":"1700000000000000001","src_ip":"::1","dst_ip":"::1","src_port":1,"dst_port":2,"tcp_flags":18,"ip_len":60,"key":"k"},
			{"ts_ns":5,"src_ip":"1.2.3.4","dst_ip":"5.6.7.8","src_port":0,"dst_port":0}]`, "", 2},
		{"missing port", `{"ts_ns":1,"src_ip":"1.2.3.4","dst_ip":"5.6.7.8","src_port":1}`, "dst_port is missing", 0},
		{"bad ip", `{"ts_ns":1,"src_ip":"1.2.3","dst_ip":"5.6.7.8","src_port":1,"dst_port":2}`, `src_ip "1.2.3"`, 0},
		{"port range", `{"ts_ns":1,"src_ip":"1.2.3.4","dst_ip":"5.6.7.8","src_port":70000,"dst_port":2}`, "src_port 70000", 0},
		{"bad ts", `{"ts_ns":-4,"src_ip":"1.2.3.4","dst_ip":"5.6.7.8","src_port":1,"dst_port":2}`, "ts_ns", 0},
		{"not json", `hello`, "expected an object", 0},
		{"empty array", `[]`, "no records", 0},
		{"truncated", `{"ts_ns":1,"src_ip":"1.2.3.4"`, "malformed JSON", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b Batch
			err := Decode("application/json", []byte(c.body), &b)
			if c.errPart == "" {
				if err != nil || len(b.Records) != c.n {
					t.Fatalf("err %v, %d records", err, len(b.Records))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.errPart) {
				t.Fatalf("error %v, want one mentioning %q", err, c.errPart)
			}
		})
	}
}

func TestDecodeByContentType(t *testing.T) {
	var e Encoder
	e.Reset(1)
	r := sample()[0]
	e.Add(&r)
	for _, ct := range []string{ContentTypeBinary, "", "application/octet-stream"} {
		var b Batch
		if err := Decode(ct, e.Bytes(), &b); err != nil || len(b.Records) != 1 {
			t.Errorf("content type %q: %v", ct, err)
		}
	}
	var b Batch
	if err := Decode("text/xml", e.Bytes(), &b); !errors.Is(err, ErrContentTyp) {
		t.Errorf("text/xml: %v", err)
	}
}

func TestStringMatchesTruthColumns(t *testing.T) {
	r := sample()[0]
	if got, want := r.String(), "1700000000123456789\t127.0.3.4\t127.0.0.1\t51234\t7000\t0x0002\t60"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func FuzzDecodeBinary(f *testing.F) {
	var e Encoder
	e.Reset(1)
	for i := range sample() {
		r := sample()[i]
		e.Add(&r)
	}
	f.Add(append([]byte(nil), e.Bytes()...))
	f.Add([]byte("CPRB\x01\x00\x00\x00\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		var b Batch
		if err := DecodeBinary(body, &b); err != nil {
			return
		}
		// Whatever decodes must re-encode to the same records.
		var e2 Encoder
		e2.Reset(b.Ingest)
		for i := range b.Records {
			e2.Add(&b.Records[i])
		}
		var b2 Batch
		if err := DecodeBinary(e2.Bytes(), &b2); err != nil || len(b2.Records) != len(b.Records) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	var e Encoder
	r := sample()[0]
	b.ReportAllocs()
	for b.Loop() {
		e.Reset(1)
		for range 512 {
			e.Add(&r)
		}
		_ = e.Bytes()
	}
	b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkDecodeBinary(b *testing.B) {
	var e Encoder
	e.Reset(1)
	r := sample()[0]
	for range 512 {
		e.Add(&r)
	}
	body := e.Bytes()
	batch := Batch{Records: make([]Record, 0, 512)}
	b.ReportAllocs()
	for b.Loop() {
		batch.Records = batch.Records[:0]
		if err := DecodeBinary(body, &batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "records/s")
}
