// Package samples finds the sample captures (with their ground truth) that
// the capture tests replay. They live in the repository, in
// services/capture/testdata/pcaps (see SOURCES.md there for where each one
// came from); CONNPIPE_PCAPS names another directory.
package samples

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Dir returns the directory of sample captures, failing the test when it
// is missing: the captures are part of the repository, so a missing one is
// a broken checkout, not a reason to skip.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := find()
	if err != nil {
		t.Fatalf("sample captures not found: %v", err)
	}
	return dir
}

func find() (string, error) {
	if dir := os.Getenv("CONNPIPE_PCAPS"); dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", errors.New("CONNPIPE_PCAPS=" + dir + " is not a directory")
		}
		return dir, nil
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot tell where the samples package lives; set CONNPIPE_PCAPS")
	}
	// self is services/capture/internal/samples/samples.go.
	dir := filepath.Join(filepath.Dir(self), "..", "..", "testdata", "pcaps")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", errors.New("looked in " + dir + "; set CONNPIPE_PCAPS")
	}
	return filepath.Clean(dir), nil
}

// Captures lists the capture files in the sample directory, sorted by name.
func Captures(t testing.TB) []string {
	t.Helper()
	dir := Dir(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var out []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".pcap") || strings.HasSuffix(n, ".pcapng") {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatalf("no .pcap or .pcapng files in %s", dir)
	}
	return out
}

// Frame is one record of a capture file.
type Frame struct {
	Link uint32 // LINKTYPE_ value
	TS   int64  // Unix ns
	Data []byte
}

// Frames reads every whole record of a capture file with gopacket's pcapgo
// readers (stopping quietly at a record the file cuts short).
func Frames(t testing.TB, path string) []Frame {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var r interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
		LinkType() layers.LinkType
	}
	if strings.HasSuffix(path, ".pcapng") {
		r, err = pcapgo.NewNgReader(fh, pcapgo.DefaultNgReaderOptions)
	} else {
		r, err = pcapgo.NewReader(fh)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []Frame
	for {
		d, ci, err := r.ReadPacketData()
		if err != nil {
			return out
		}
		out = append(out, Frame{Link: uint32(r.LinkType()), TS: ci.Timestamp.UnixNano(), Data: d})
	}
}
