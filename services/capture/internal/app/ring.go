package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/keyscan"
	"github.com/connpipe/connpipe/services/capture/internal/source"
	"github.com/connpipe/connpipe/services/capture/internal/textout"
)

// ringReader is one live reader: it runs each frame of each block of its
// ring through its pipeline in place, on its own core, handing the
// block's records to the shared output up to maxHeld at a time, then
// hands the block back to the kernel. Every record of a connection
// reaches the same reader, which hands them over in order, so they stay
// in order at the output. Counters are added once per block, so readers
// on different cores do not contend for them per packet.
type ringReader struct {
	live *source.Live
	link decode.LinkType
	p    frames
	m    *metrics
}

// maxHeld bounds the records a ring reader holds: a block of small
// frames holds thousands of records.
const maxHeld = 1024

// drainer is an output that buffers what it is given and writes it out
// on Flush (textout): a reader calls it when its ring has no next block
// ready, which bounds the wait as RING_TIMEOUT does without a timer of
// the output's own waking the process.
type drainer interface{ Flush() error }

// run reads blocks until ctx ends (nil) or the ring or the output fails.
func (r *ringReader) run(ctx context.Context) error {
	r.link = r.live.LinkType()
	for {
		blk, err := r.live.NextBlock(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = r.consume(ctx, &blk)
		r.live.Release()
		if d, ok := r.p.out.(drainer); ok && err == nil && !r.live.Pending() {
			err = d.Flush()
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, syscall.EPIPE) {
				return nil // EPIPE: stdout closed by the reader (capture | head)
			}
			return fmt.Errorf("output: %w", err)
		}
	}
}

// consume runs every frame of blk through the pipeline and hands the
// records held to the output.
func (r *ringReader) consume(ctx context.Context, blk *source.Block) error {
	defer r.p.flush(r.m, nil)
	for {
		f, ok := blk.Next()
		if !ok {
			break
		}
		if err := r.p.frame(ctx, r.link, f.Data, int(f.WireLen), f.TS); err != nil {
			return err
		}
	}
	if err := r.p.handOver(ctx); err != nil {
		return err
	}
	if fault := blk.Fault(); fault != source.FaultNone {
		r.m.ringErrors[fault].Inc()
		if r.p.debug {
			r.p.log.Debug("corrupt ring block skipped", "reason", fault.String(), "frames", blk.Frames, "status", blk.Status, "worker", r.live.Worker())
		}
	}
	return nil
}

// readRings runs one ringReader per reader until ctx ends or one fails,
// which stops the others.
func readRings(ctx context.Context, lives []*source.Live, tun decode.Tunnels, flt *filter.Filter, out output,
	scan *keyscan.Scanner, m *metrics, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		errs = make([]error, len(lives))
	)
	for i, l := range lives {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &ringReader{live: l, p: newFrames(tun, flt, readerOutput(out, scan), scan, maxHeld, log), m: m}
			r.p.where = []any{"worker", l.Worker()}
			if errs[i] = r.run(ctx); errs[i] != nil {
				errs[i] = fmt.Errorf("reader %d: %w", l.Worker(), errs[i])
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readerOutput is where one reader's records go: with text output and no
// key scanner (which takes the records itself), a part of the text output
// of its own, so that readers format their lines on their own cores.
func readerOutput(out output, scan *keyscan.Scanner) output {
	if t, ok := out.(*textout.Writer); ok && scan == nil {
		return t.Part()
	}
	return out
}

// pollRingStats adds the kernel's drop and freeze counts of every reader
// to kernel_drops_total and ring_freezes_total every second, and once more
// when ctx ends.
func pollRingStats(ctx context.Context, lives []*source.Live, m *metrics, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		done := false
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		for _, l := range lives {
			st, err := l.Stats()
			if err != nil {
				if ctx.Err() == nil {
					log.Debug("read kernel ring counters", "err", err, "worker", l.Worker())
				}
				continue
			}
			w := strconv.Itoa(l.Worker())
			if st.Drops > 0 {
				m.kernelDrops.WithLabelValues(w).Add(float64(st.Drops))
				log.Warn("kernel dropped frames: the capture is not keeping up", "dropped", st.Drops, "worker", l.Worker())
			}
			if st.Freezes > 0 {
				m.ringFreezes.WithLabelValues(w).Add(float64(st.Freezes))
			}
		}
		if done {
			return
		}
	}
}
