package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/keyscan"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/shared/record"
)

// frames is the per-frame pipeline that every reader runs, the file
// reader (read) and each ring reader (ringReader.consume) alike: decode,
// count, filter, stamp, then the key scanner or the output. It counts in
// its own tally, which the reader adds to the metrics (flush) as often as
// it likes. One per reader: it is not safe for concurrent use.
type frames struct {
	dec  *decode.Decoder
	flt  *filter.Filter
	scan *keyscan.Scanner
	out  output
	// hold, when above 0, collects up to hold records and adds them to
	// out together (AddAll takes the output's lock once); at 0 each
	// record goes to out as it comes.
	hold int
	recs []record.Record
	rec  record.Record
	t    tally
	tt   tunnelTally
	log  *slog.Logger
	// debug is whether Debug logs are on; where names the reader in them.
	debug bool
	where []any
}

func newFrames(tun decode.Tunnels, flt *filter.Filter, out output, scan *keyscan.Scanner, hold int, log *slog.Logger) frames {
	return frames{dec: decode.NewDecoder(tun), flt: flt, out: out, scan: scan, hold: hold, log: log,
		debug: log.Enabled(context.Background(), slog.LevelDebug)}
}

// tally counts frames by where they went, until flushed to the metrics.
type tally struct {
	packets, records, filtered int
	// added counts the records handed on (to the scanner or the output).
	added int
	// malformed is the sum of errs.
	malformed int
	errs      [decode.NumStatus]int
	// tunneled counts the frames in tt, the tunnel frames.
	tunneled int
}

// frame takes one frame, of link type link, wire bytes long on the wire
// and captured at ts, through the pipeline. Its error is the output's or
// the scanner's.
func (p *frames) frame(ctx context.Context, link decode.LinkType, data []byte, wire int, ts int64) error {
	p.t.packets++
	st, seg, via := p.dec.Decode(link, data, wire, &p.rec)
	matched := st == decode.StatusOK && p.flt.Match(&p.rec)
	if via != decode.TunnelNone {
		p.tt[via][tunOutcome(st, matched)]++
		p.t.tunneled++
	}
	if st != decode.StatusOK {
		if st.Malformed() {
			p.t.errs[st]++
			p.t.malformed++
			if p.debug {
				p.log.Debug("malformed frame skipped", append([]any{"reason", st.String(), "link", link, "len", len(data), "ts", ts}, p.where...)...)
			}
		} else {
			p.t.filtered++
		}
		return nil
	}
	p.t.records++
	if !matched {
		p.t.filtered++
		return nil
	}
	p.rec.TS = ts
	var err error
	switch {
	case p.scan != nil:
		err = p.scan.Packet(ctx, &p.rec, seg)
	case p.hold == 0:
		err = p.out.Add(ctx, &p.rec)
	default:
		if p.recs = append(p.recs, p.rec); len(p.recs) == p.hold {
			err = p.handOver(ctx)
		}
	}
	if err == nil {
		p.t.added++
	}
	return err
}

// handOver adds the held records to the output.
func (p *frames) handOver(ctx context.Context) error {
	if len(p.recs) == 0 {
		return nil
	}
	err := p.out.AddAll(ctx, p.recs)
	p.recs = p.recs[:0]
	return err
}

// flush adds the tally to the metrics, and to sum when it is not nil, and
// starts it again.
func (p *frames) flush(m *metrics, sum *tally) {
	t := &p.t
	if t.packets > 0 {
		m.packets.Add(float64(t.packets))
	}
	if t.records > 0 {
		m.records.Add(float64(t.records))
	}
	if t.filtered > 0 {
		m.filtered.Add(float64(t.filtered))
	}
	if t.malformed > 0 {
		for s, n := range t.errs {
			if n > 0 {
				m.decodeErrors[s].Add(float64(n))
			}
		}
	}
	if t.tunneled > 0 {
		p.tt.flush(m.tunnels)
	}
	if sum != nil {
		sum.packets += t.packets
		sum.records += t.records
		sum.filtered += t.filtered
		sum.added += t.added
		sum.malformed += t.malformed
		for s, n := range t.errs {
			sum.errs[s] += n
		}
	}
	*t = tally{}
}

// read moves frames from src through p until ctx ends or the source does.
// The metrics follow every frame.
func read(ctx context.Context, src source.Source, files *source.Files, p *frames, m *metrics, log *slog.Logger) error {
	var (
		sum         tally
		lastLog     = time.Now()
		lastPackets int
	)
	for {
		pk, err := src.Next(ctx)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				summary(log, &sum, "capture files read", nil)
				return nil
			case ctx.Err() != nil:
				return nil
			}
			if files != nil {
				summary(log, &sum, "capture files read up to an error", err)
			}
			return err // a truncated file (source.ErrTruncated) ends the run here
		}
		err = p.frame(ctx, pk.Link, pk.Data, pk.Len, pk.TS)
		added := p.t.added > 0
		p.flush(m, &sum)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EPIPE) {
				return nil // stdout closed by the reader (capture -r f | head)
			}
			return fmt.Errorf("output: %w", err)
		}
		if files != nil && added && sum.packets&0x3ff == 0 {
			if now := time.Now(); now.Sub(lastLog) >= progressEvery {
				progress(log, files, &sum, float64(sum.packets-lastPackets)/now.Sub(lastLog).Seconds())
				lastLog, lastPackets = now, sum.packets
			}
		}
	}
}

// summary logs where every frame read went: packets = published +
// filtered + malformed, the malformed ones by reason.
func summary(log *slog.Logger, sum *tally, msg string, err error) {
	attrs := []any{"packets", sum.packets, "records", sum.records, "published", sum.added, "filtered", sum.filtered}
	var reasons []any
	for s, n := range sum.errs {
		if n > 0 {
			reasons = append(reasons, decode.Status(s).String(), n)
		}
	}
	attrs = append(attrs, "malformed", sum.malformed)
	if sum.malformed > 0 {
		attrs = append(attrs, slog.Group("malformed_by_reason", reasons...))
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Info(msg, attrs...)
}

// progress logs how far a long replay has come.
func progress(log *slog.Logger, files *source.Files, sum *tally, rate float64) {
	file := ""
	if f := files.Current(); f != nil {
		file = f.Path()
	}
	log.Info("replay progress", "file", file, "packets", sum.packets, "records", sum.records, "published", sum.added, "packets_per_s", int(rate))
}
