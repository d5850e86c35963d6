package pipeline

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// bigTCPCapture writes a capture of one IPv4 big-TCP segment of total bytes
// as a sender captures it: total length 0 in the IP header, 128 bytes of
// the frame captured out of 14+total on the wire.
func bigTCPCapture(t *testing.T, total int) string {
	t.Helper()
	frame := make([]byte, 128)
	copy(frame[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(frame[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	ip := frame[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6 // total length left 0
	copy(ip[12:16], []byte{10, 70, 0, 40})
	copy(ip[16:20], []byte{10, 70, 0, 1})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 50000)
	binary.BigEndian.PutUint16(tcp[2:], 7000)
	tcp[12], tcp[13] = 5<<4, 0x18 // PSH ACK
	path := filepath.Join(t.TempDir(), "bigtcp.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(128, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	ci := gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(frame), Length: 14 + total}
	if err := w.WritePacket(ci, frame); err != nil {
		t.Fatal(err)
	}
	return path
}

// A big-TCP segment of 70,040 bytes is recorded, shipped, stored and read
// back as 70,040 through the whole pipeline: capture -r → RabbitMQ →
// consumer → Redis → admin's API and CLI.
func TestBigTCPLengthThroughThePipeline(t *testing.T) {
	s := newSystem(t, nil)
	s.startAdmin()
	s.startConsumer("consumer-1")
	path := bigTCPCapture(t, 70040)
	start(t, "capture", "capture", s.with(map[string]string{"PCAP_FILES": path, "METRICS_ADDR": "127.0.0.1:0"}))
	var got []record.Record
	waitFor(t, 30*time.Second, "the record stored and read back", func() (bool, string) {
		got = readRecords(t, s, "since=5m&src=10.70.0.40")
		return len(got) > 0, "no record yet"
	})
	if len(got) != 1 || got[0].IPLen != 70040 {
		t.Fatalf("read back %+v, want one record of ip_len 70040", got)
	}
	out, err := s.cli("records", "--since", "5m", "--src", "10.70.0.40")
	if err != nil || !strings.Contains(out, "\t70040") {
		t.Fatalf("admin records: %v\n%s", err, out)
	}
}
