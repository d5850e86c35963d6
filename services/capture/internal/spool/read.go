package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// Reading: the entries oldest first, their acks, and a scan of a spool
// directory from outside.

// Unread reports whether entries wait to be read by Next.
func (s *Spool) Unread() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unreadLocked()
}

func (s *Spool) unreadLocked() bool {
	for _, g := range s.segs {
		if g.read < g.entries {
			return true
		}
	}
	return false
}

// Next returns the oldest unread entry, or ok=false when the reader has
// caught up. An entry that fails its checksum here (damaged on disk after
// Open) is counted and the rest of its segment skipped.
func (s *Spool) Next() (e Entry, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return e, false, ErrClosed
		}
		g := s.rseg
		if g == nil || g.read >= g.entries {
			if g != nil && g.sealed {
				s.closeReaderLocked()
			}
			g = nil
			for _, c := range s.segs {
				if c.read < c.entries {
					g = c
					break
				}
			}
			if g == nil {
				return e, false, nil
			}
			if s.rseg != g {
				s.closeReaderLocked()
				f, err := os.Open(g.path)
				if err != nil {
					return e, false, fmt.Errorf("spool: %w", err)
				}
				s.r, s.rseg, s.roff = f, g, int64(len(fileMagic))
			}
		}
		e, err = s.readLocked(g)
		if err != nil {
			s.m.Corrupt.Inc()
			s.dropLocked(g.unread(), ReasonCorrupt)
			s.log.Error("spool: entry unreadable; rest of the segment skipped", "file", g.path, "offset", s.roff, "err", err)
			g.acked += g.entries - g.read
			g.ackedRecs += g.records - g.readRecords
			s.batches -= g.entries - g.read
			s.records -= g.records - g.readRecords
			g.read, g.readRecords = g.entries, g.records
			s.closeReaderLocked()
			s.maybeRemoveLocked(g)
			s.gauges()
			continue
		}
		g.read++
		g.readRecords += e.Records
		s.inflight = append(s.inflight, flight{id: e.ID, ingest: e.Ingest})
		s.gauges()
		return e, true, nil
	}
}

func (s *Spool) readLocked(g *segment) (Entry, error) {
	var e Entry
	if _, err := s.r.ReadAt(s.hdr[:], s.roff); err != nil {
		return e, err
	}
	blen := int(binary.LittleEndian.Uint32(s.hdr[0:]))
	if blen > maxEntryBody || s.roff+int64(entryHeader+blen) > g.size {
		return e, fmt.Errorf("entry length %d out of range", blen)
	}
	body := make([]byte, blen)
	if _, err := s.r.ReadAt(body, s.roff+entryHeader); err != nil {
		return e, err
	}
	if crc(s.hdr[:16], body) != binary.LittleEndian.Uint32(s.hdr[16:]) {
		return e, errors.New("checksum mismatch")
	}
	e = Entry{
		Body:    body,
		Records: int(binary.LittleEndian.Uint32(s.hdr[4:])),
		Ingest:  int64(binary.LittleEndian.Uint64(s.hdr[8:])),
		ID:      ID{Seg: g.seq, Off: s.roff},
	}
	s.roff += int64(entryHeader + blen)
	return e, nil
}

// Ack marks an entry returned by Next as confirmed by the broker. Acks of
// entries whose segment was dropped are ignored.
func (s *Spool) Ack(e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return // the next Open sends it again
	}
	i := slices.IndexFunc(s.inflight, func(f flight) bool { return f.id == e.ID })
	if i < 0 {
		return
	}
	s.inflight = slices.Delete(s.inflight, i, i+1)
	for _, g := range s.segs {
		if g.seq == e.ID.Seg {
			g.acked++
			g.ackedRecs += e.Records
			s.batches--
			s.records -= e.Records
			s.m.Drained.Add(float64(e.Records))
			s.maybeRemoveLocked(g)
			break
		}
	}
	s.gauges()
}

// Has reports whether the entry named by id is still in the spool (not
// acked, not dropped).
func (s *Spool) Has(id ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.inflight, func(f flight) bool { return f.id == id })
}

// Scan calls fn for every intact entry in dir's segment files, oldest
// first, without taking the lock or changing anything: for tests and
// inspection of a spool left by a stopped process.
func Scan(dir string, fn func(Entry)) error {
	names, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(b) < len(fileMagic) || string(b[:len(fileMagic)]) != fileMagic {
			continue
		}
		off := len(fileMagic)
		for off+entryHeader <= len(b) {
			h := b[off : off+entryHeader]
			blen := int(binary.LittleEndian.Uint32(h))
			if blen > maxEntryBody || off+entryHeader+blen > len(b) {
				break
			}
			body := b[off+entryHeader : off+entryHeader+blen]
			if crc(h[:16], body) != binary.LittleEndian.Uint32(h[16:]) {
				break
			}
			fn(Entry{Body: body, Records: int(binary.LittleEndian.Uint32(h[4:])),
				Ingest: int64(binary.LittleEndian.Uint64(h[8:])), ID: ID{Off: int64(off)}})
			off += entryHeader + blen
		}
	}
	return nil
}
