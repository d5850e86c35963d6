package source

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// File magic numbers.
const (
	magicPcapMicro   = 0xa1b2c3d4
	magicPcapNano    = 0xa1b23c4d
	magicPcapng      = 0x0a0d0d0a
	pcapHeaderLen    = 24
	pcapRecordHdrLen = 16
	// minSnaplen is the least snapshot length a pcap reader accepts records
	// up to: some writers put a smaller snaplen in the header than the
	// records they write, and tshark reads those.
	minSnaplen = 262144
)

// ErrNotCapture reports a file that is neither pcap nor pcapng.
var ErrNotCapture = errors.New("not a pcap or pcapng file")

type packetReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// File reads one pcap or pcapng file (pcap may be gzip-compressed), with
// gopacket's pcapgo readers. The format is detected from the magic number.
type File struct {
	path    string
	f       *os.File
	r       packetReader
	ng      bool
	link    decode.LinkType
	ngLinks []decode.LinkType // pcapng: the full link types of the interfaces described before the first packet
	br      *bufio.Reader     // pcap: the stream pcapgo reads, to see each record header
	order   binary.ByteOrder  // pcap: the file's byte order
	nano    bool              // pcap: nanosecond timestamps
	offset  int64             // pcap: byte offset of the next record
	packets int
	done    error
}

// OpenFile opens path and reads its file header.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var hdr [pcapHeaderLen]byte
	n, err := io.ReadFull(f, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n < 4 {
		f.Close()
		return nil, fmt.Errorf("capture file %s: %w (only %d bytes)", path, ErrNotCapture, n)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek %s: %w", path, err)
	}
	src := &File{path: path, f: f, offset: pcapHeaderLen}
	le, be := binary.LittleEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[:4])
	switch {
	case le == magicPcapng:
		ng, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("capture file %s: pcapng header: %w", path, err)
		}
		src.r, src.ng = ng, true
		src.ngLinks = pcapngLinkTypes(f)
	case le == magicPcapMicro || le == magicPcapNano || be == magicPcapMicro || be == magicPcapNano ||
		(hdr[0] == 0x1f && hdr[1] == 0x8b): // gzip-compressed pcap
		// pcapgo reads through this buffered reader as it is (it wraps
		// only a smaller one), so Next can peek at each record header.
		br := bufio.NewReaderSize(f, 1<<16)
		if hdr[0] == 0x1f && hdr[1] == 0x8b {
			gz, err := gzip.NewReader(br)
			if err != nil {
				f.Close()
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, &TruncatedError{File: path, Offset: 0}
				}
				return nil, fmt.Errorf("capture file %s: gzip header: %w", path, err)
			}
			br = bufio.NewReaderSize(gz, 1<<16)
		}
		// gopacket's LinkType is one byte wide; take the full value from
		// the header.
		if h, err := br.Peek(pcapHeaderLen); err == nil {
			src.order = binary.LittleEndian
			if m := binary.BigEndian.Uint32(h); m == magicPcapMicro || m == magicPcapNano {
				src.order = binary.BigEndian
			}
			src.nano = src.order.Uint32(h) == magicPcapNano
			src.link = decode.LinkType(src.order.Uint32(h[20:24]) & 0xffff)
		}
		src.br = br
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			f.Close()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, &TruncatedError{File: path, Offset: 0}
			}
			return nil, fmt.Errorf("capture file %s: pcap header: %w", path, err)
		}
		if pr.Snaplen() < minSnaplen {
			pr.SetSnaplen(minSnaplen)
		}
		src.r = pr
	default:
		f.Close()
		return nil, fmt.Errorf("capture file %s: %w (magic %08x)", path, ErrNotCapture, be)
	}
	return src, nil
}

// Path is the file's name as given.
func (s *File) Path() string { return s.path }

// Packets is the number of whole packets read so far.
func (s *File) Packets() int { return s.packets }

// Next returns the next packet, io.EOF at the end of the file, or a
// *TruncatedError when the file ends in the middle of a record.
func (s *File) Next(ctx context.Context) (Packet, error) {
	if s.done != nil {
		return Packet{}, s.done
	}
	// The record header, before pcapgo consumes it: see pcapTime.
	var sec, frac uint32
	var peeked bool
	if s.br != nil {
		if h, err := s.br.Peek(pcapRecordHdrLen); err == nil {
			sec, frac, peeked = s.order.Uint32(h[0:4]), s.order.Uint32(h[4:8]), true
		}
	}
	data, ci, err := s.r.ZeroCopyReadPacketData()
	if err != nil {
		s.done = s.fail(err)
		return Packet{}, s.done
	}
	s.packets++
	p := Packet{TS: ci.Timestamp.UnixNano(), Data: data, Link: s.link, Len: ci.Length}
	if peeked {
		p.TS = pcapTime(sec, frac, s.nano)
	}
	if s.ng {
		p.Link = decode.LinkUnknown
		if len(ci.AncillaryData) > 0 {
			if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
				p.Link = decode.LinkType(lt)
				// gopacket keeps the low byte only (LINKTYPE_LINUX_SLL2
				// is 276).
				if i := ci.InterfaceIndex; i >= 0 && i < len(s.ngLinks) && uint8(s.ngLinks[i]) == uint8(lt) {
					p.Link = s.ngLinks[i]
				}
			}
		}
	} else {
		s.offset += pcapRecordHdrLen + int64(len(data))
	}
	return p, nil
}

// pcapTime is the time of a pcap record stamped sec seconds and frac
// microseconds (or nanoseconds), in Unix nanoseconds, as tshark reads it: a
// fraction of a second or more is carried into the seconds, after it is
// scaled to nanoseconds in 32 bits and taken as signed (so a fraction from
// 2^31 ns up, which no writer should produce, wraps as it does in tshark).
// gopacket's reader carries too but keeps the scaled fraction unsigned.
func pcapTime(sec, frac uint32, nano bool) int64 {
	if !nano {
		frac *= 1000
	}
	return int64(sec)*1e9 + int64(int32(frac))
}

func (s *File) fail(err error) error {
	if s.ng {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			off, serr := pcapngCut(s.path)
			switch {
			case serr != nil:
				return fmt.Errorf("capture file %s: %w", s.path, serr)
			case off >= 0:
				return &TruncatedError{File: s.path, Offset: off, Packets: s.packets}
			}
			return io.EOF
		}
		return fmt.Errorf("capture file %s: after %d packets: %w", s.path, s.packets, err)
	}
	switch {
	case errors.Is(err, io.EOF):
		return io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &TruncatedError{File: s.path, Offset: s.offset, Packets: s.packets}
	}
	return fmt.Errorf("capture file %s: record at byte %d: %w", s.path, s.offset, err)
}

// Close closes the file.
func (s *File) Close() error { return s.f.Close() }

// pcapngLinkTypes returns the link types of the interfaces that a pcapng
// file describes before its first packet (where capture tools put them),
// in full: gopacket's reader keeps a link type in one byte. It reads with
// ReadAt, leaving f's offset alone, and gives up quietly on anything odd
// (the reader reports it).
func pcapngLinkTypes(f *os.File) []decode.LinkType {
	const (
		blockSHB = magicPcapng
		blockIDB = 1
		blockPB  = 2
		blockSPB = 3
		blockEPB = 6
		maxScan  = 1 << 20
	)
	var (
		links []decode.LinkType
		order binary.ByteOrder = binary.LittleEndian
		hdr   [12]byte
	)
	for off := int64(0); off < maxScan; {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return links
		}
		typ := binary.LittleEndian.Uint32(hdr[0:])
		if typ == blockSHB {
			if len(links) > 0 {
				return links // a second section: its interfaces start again
			}
			if binary.LittleEndian.Uint32(hdr[8:]) == 0x1a2b3c4d {
				order = binary.LittleEndian
			} else {
				order = binary.BigEndian
			}
		} else {
			typ = order.Uint32(hdr[0:])
		}
		switch typ {
		case blockIDB:
			links = append(links, decode.LinkType(order.Uint16(hdr[8:])))
		case blockPB, blockSPB, blockEPB:
			return links
		}
		n := int64(order.Uint32(hdr[4:]))
		if n < 12 {
			return links
		}
		off += n
	}
	return links
}

// pcapngCut walks the block structure of a pcapng file and returns the
// offset of a block that the file cuts short, or -1 if the file ends on a
// block boundary. It runs only once the reader has hit the end of the file,
// because gopacket's pcapng reader reports a cut block as a plain io.EOF.
func pcapngCut(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	br := bufio.NewReaderSize(f, 1<<16)
	var order binary.ByteOrder = binary.LittleEndian
	var off int64
	var hdr [12]byte
	for off < size {
		if size-off < 12 {
			return off, nil
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return off, nil
		}
		if binary.LittleEndian.Uint32(hdr[0:4]) == magicPcapng {
			if binary.LittleEndian.Uint32(hdr[8:12]) == 0x1a2b3c4d {
				order = binary.LittleEndian
			} else {
				order = binary.BigEndian
			}
		}
		length := int64(order.Uint32(hdr[4:8]))
		if length < 12 || off+length > size {
			return off, nil
		}
		if _, err := br.Discard(int(length - 12)); err != nil {
			return off, nil
		}
		off += length
	}
	return -1, nil
}

// Files reads several capture files one after the other, optionally at the
// recorded speed.
type Files struct {
	paths []string
	speed float64
	open  func(string) (*File, error)
	cur   *File
	i     int
	// OnOpen, if set, is called as each file is opened.
	OnOpen func(f *File)

	// pacing: packet with timestamp ts is due at base + (ts-ts0)/speed.
	paced bool
	base  time.Time
	ts0   int64
	last  int64
	timer *time.Timer
}

// NewFiles reads paths in order. speed 0 reads as fast as possible; speed
// s > 0 replays at s times the recorded speed (1 = as recorded).
func NewFiles(paths []string, speed float64) *Files {
	return &Files{paths: paths, speed: speed, open: OpenFile}
}

// Current is the file being read, or nil.
func (s *Files) Current() *File { return s.cur }

// Next returns the next packet of the current file, moving on to the next
// file at the end of one. It returns io.EOF after the last file.
func (s *Files) Next(ctx context.Context) (Packet, error) {
	for {
		if s.cur == nil {
			if s.i >= len(s.paths) {
				return Packet{}, io.EOF
			}
			f, err := s.open(s.paths[s.i])
			s.i++
			if err != nil {
				return Packet{}, err
			}
			s.cur = f
			if s.OnOpen != nil {
				s.OnOpen(f)
			}
		}
		p, err := s.cur.Next(ctx)
		if errors.Is(err, io.EOF) {
			s.cur.Close()
			s.cur = nil
			continue
		}
		if err != nil {
			return Packet{}, err
		}
		if s.speed > 0 {
			if err := s.pace(ctx, p.TS); err != nil {
				return Packet{}, err
			}
		} else if err := ctx.Err(); err != nil {
			return Packet{}, err
		}
		return p, nil
	}
}

// pace waits until the packet stamped ts is due. A timestamp that goes
// backwards (a new file from an earlier time) starts a new time base.
func (s *Files) pace(ctx context.Context, ts int64) error {
	now := time.Now()
	if !s.paced || ts < s.last {
		s.paced, s.base, s.ts0 = true, now, ts
	}
	s.last = ts
	due := s.base.Add(time.Duration(float64(ts-s.ts0) / s.speed))
	d := due.Sub(now)
	if d <= 0 {
		return ctx.Err()
	}
	if s.timer == nil {
		s.timer = time.NewTimer(d)
	} else {
		s.timer.Reset(d)
	}
	select {
	case <-ctx.Done():
		s.timer.Stop()
		return ctx.Err()
	case <-s.timer.C:
		return nil
	}
}

// Close closes the file being read.
func (s *Files) Close() error {
	if s.cur != nil {
		err := s.cur.Close()
		s.cur = nil
		return err
	}
	return nil
}
