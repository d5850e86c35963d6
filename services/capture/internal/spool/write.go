package spool

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
)

// Writing: appending entries, syncing them, sealing full segments, and
// what a full spool drops.

// Append adds e at the end. When the spool is full, the policy decides
// what is dropped; drops are counted and logged, and Append returns nil
// for them. It returns an error only when the disk refused the write (the
// batch is then counted as dropped, reason write_error).
func (s *Spool) Append(e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.dropLocked(e.Records, ReasonWriteError)
		return ErrClosed
	}
	need := int64(entryHeader + len(e.Body))
	if len(e.Body) > maxEntryBody {
		s.dropLocked(e.Records, ReasonFull)
		return nil
	}
	// A new segment costs its header too.
	extra := int64(0)
	if s.w == nil || s.segs[len(s.segs)-1].size+need > s.opt.SegmentBytes {
		extra = int64(len(fileMagic))
	}
	if s.bytes+need+extra > s.opt.MaxBytes {
		if s.opt.Full == DropOldest {
			for s.bytes+need+extra > s.opt.MaxBytes && len(s.segs) > 0 {
				s.dropOldestLocked()
				if s.w == nil {
					extra = int64(len(fileMagic))
				}
			}
		}
		if s.bytes+need+extra > s.opt.MaxBytes {
			s.dropLocked(e.Records, ReasonFull)
			return nil
		}
	}
	if err := s.writeLocked(e, need); err != nil {
		s.dropLocked(e.Records, ReasonWriteError)
		s.log.Error("spool write failed; batch dropped", "dir", s.opt.Dir, "records", e.Records, "err", err)
		return err
	}
	s.m.Written.Add(float64(e.Records))
	s.gauges()
	return nil
}

func (s *Spool) writeLocked(e Entry, need int64) error {
	if s.w != nil && s.segs[len(s.segs)-1].size+need > s.opt.SegmentBytes {
		s.sealLocked()
	}
	if s.w == nil {
		g := &segment{seq: s.nextSeq, path: s.segPath(s.nextSeq), firstIngest: e.Ingest}
		f, err := os.OpenFile(g.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		if err != nil {
			return err
		}
		if _, err := f.Write([]byte(fileMagic)); err != nil {
			f.Close()
			_ = os.Remove(g.path)
			return err
		}
		s.nextSeq++
		g.size = int64(len(fileMagic))
		s.w = f
		s.segs = append(s.segs, g)
		s.bytes += g.size
		if s.opt.Fsync != FsyncNever {
			s.syncDir()
		}
	}
	g := s.segs[len(s.segs)-1]
	buf := make([]byte, need)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(e.Body)))
	binary.LittleEndian.PutUint32(buf[4:], uint32(e.Records))
	binary.LittleEndian.PutUint64(buf[8:], uint64(e.Ingest))
	copy(buf[entryHeader:], e.Body)
	binary.LittleEndian.PutUint32(buf[16:], crc(buf[:16], e.Body))
	if _, err := s.w.WriteAt(buf, g.size); err != nil {
		// Cut what part of it landed and start a new segment next time.
		_ = s.w.Truncate(g.size)
		s.sealLocked()
		return err
	}
	if g.entries == 0 {
		g.firstIngest = e.Ingest
	}
	g.size += need
	g.entries++
	g.records += e.Records
	s.bytes += need
	s.batches++
	s.records += e.Records
	s.dirty = true
	switch s.opt.Fsync {
	case FsyncBatch:
		s.syncLocked()
	case FsyncInterval:
		if now := s.opt.Now(); now.Sub(s.lastSync) >= s.opt.FsyncInterval {
			s.syncLocked()
		}
	}
	return nil
}

func (s *Spool) syncLocked() {
	if s.w == nil || !s.dirty {
		return
	}
	if err := s.w.Sync(); err != nil {
		s.log.Warn("spool fsync", "err", err)
	}
	s.dirty, s.lastSync = false, s.opt.Now()
}

func (s *Spool) syncDir() {
	if d, err := os.Open(s.opt.Dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Sync forces appended entries to disk now (for FsyncInterval, callers
// may call it from a ticker so a quiet spool is not left dirty).
func (s *Spool) Sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opt.Fsync != FsyncNever {
		s.syncLocked()
	}
}

// sealLocked closes the write segment; new entries go to a new one.
func (s *Spool) sealLocked() {
	if s.w == nil {
		return
	}
	if s.opt.Fsync != FsyncNever {
		s.syncLocked()
	}
	s.w.Close()
	s.w = nil
	g := s.segs[len(s.segs)-1]
	g.sealed = true
	s.maybeRemoveLocked(g)
}

// dropOldestLocked removes the oldest segment, counting its unread
// records as dropped. Entries of it already handed out stay with whoever
// has them; their acks are ignored.
func (s *Spool) dropOldestLocked() {
	g := s.segs[0]
	if !g.sealed {
		s.sealLocked()
		if len(s.segs) == 0 || s.segs[0] != g {
			return // sealing removed it (nothing unacked)
		}
	}
	if n := g.unread(); n > 0 {
		s.dropLocked(n, ReasonFull)
	}
	s.removeSegLocked(g)
}

// removeSegLocked forgets g and deletes its file.
func (s *Spool) removeSegLocked(g *segment) {
	i := slices.Index(s.segs, g)
	if i < 0 {
		return
	}
	s.segs = slices.Delete(s.segs, i, i+1)
	if s.rseg == g {
		s.closeReaderLocked()
	}
	s.inflight = slices.DeleteFunc(s.inflight, func(f flight) bool { return f.id.Seg == g.seq })
	s.bytes -= g.size
	s.batches -= g.entries - g.acked
	s.records -= g.records - g.ackedRecs
	if err := os.Remove(g.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: remove segment", "file", g.path, "err", err)
	}
	s.gauges()
}

// maybeRemoveLocked deletes g once every entry is acked and nothing more
// will be written to it.
func (s *Spool) maybeRemoveLocked(g *segment) {
	if g.acked < g.entries {
		return
	}
	if !g.sealed {
		// The write segment: removable once the reader has read it all.
		if g.read < g.entries {
			return
		}
		if s.opt.Fsync != FsyncNever {
			s.syncLocked()
		}
		s.w.Close()
		s.w = nil
		g.sealed = true
	}
	s.removeSegLocked(g)
}

func (s *Spool) closeReaderLocked() {
	if s.r != nil {
		s.r.Close()
	}
	s.r, s.rseg, s.roff = nil, nil, 0
}

// dropLocked counts and logs dropped records.
func (s *Spool) dropLocked(records int, reason string) {
	if records <= 0 {
		return
	}
	s.m.dropped(reason).Add(float64(records))
	if now := s.opt.Now(); now.Sub(s.dropLogged) >= DropLogEvery {
		s.log.Error("SPOOL DROPPING RECORDS: they will never reach the broker",
			"reason", reason, "records", records+s.dropQuiet, "policy", string(s.opt.Full),
			"max_bytes", s.opt.MaxBytes, "dir", s.opt.Dir)
		s.dropLogged, s.dropQuiet = now, 0
	} else {
		s.dropQuiet += records
	}
}
