//go:build e2e && mirror

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
)

// TestComposeMirror runs the stack with the mirror override
// (deployments/compose/mirror.yml): mirror-source copies capture's
// incoming frames in VXLAN to capture-mirror, which runs in mirror mode.
// While the generator runs for a while, both captures record the same TCP
// packets, so each packet is stored twice: every (addresses, ports,
// flags, length) seen in that window is stored an even number of times,
// and capture-mirror counted its records as tunnel frames.
func TestComposeMirror(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "connpipe-mirror", "deployments/compose/mirror.yml")
	s.prepareBeside(ctx)
	want := map[string]int{"redis-a": 1, "redis-b": 1, "rabbitmq": 1, "capture": 1, "capture-mirror": 1,
		"mirror-source": 1, "consumer": 1, "admin": 1, "trafficgen": 3}
	s.timedStage("up: capture, the mirror source and the mirror target, healthy", func() {
		s.dc(ctx, "up", "-d")
		s.waitHealthy(ctx, 6*time.Minute, want)
	})
	s.connectRedis(ctx)
	var from, to int64
	s.timedStage("traffic for 30s between quiet seconds", func() {
		s.dc(ctx, "stop", "trafficgen")
		time.Sleep(3 * time.Second)
		from = time.Now().Unix() + 1
		time.Sleep(time.Until(time.Unix(from, 0)))
		s.dc(ctx, "start", "trafficgen")
		time.Sleep(30 * time.Second)
		s.dc(ctx, "stop", "trafficgen")
		to = time.Now().Unix() + 1
		time.Sleep(5 * time.Second) // batches, confirms, consumers
	})
	s.timedStage("every packet stored twice, once from each capture", func() {
		s.eventually(time.Minute, "each packet stored by both captures", func() error {
			return s.checkMirrored(ctx, from, to)
		})
		m := s.metrics(ctx, s.service(ctx, "capture-mirror")[0], 9100)
		rec := m[`connpipe_capture_tunnel_frames_total{outcome="recorded",tunnel="vxlan"}`]
		if rec == 0 || m["connpipe_capture_decode_errors_total"] != 0 {
			t.Fatalf("capture-mirror: %v tunnel frames recorded, %v decode errors", rec, m["connpipe_capture_decode_errors_total"])
		}
		s.logf("capture-mirror: %.0f VXLAN frames recorded, %.0f filtered by the packet inside, %.0f of unknown VNIs",
			rec, m[`connpipe_capture_tunnel_frames_total{outcome="filtered_inner",tunnel="vxlan"}`],
			m[`connpipe_capture_tunnel_frames_total{outcome="unknown_id",tunnel="vxlan"}`])
	})
	s.timedStage("down", func() { s.dc(ctx, "down", "-v", "--remove-orphans", "-t", "5") })
}

// packetKey is what both captures record alike of a packet (not the time).
type packetKey struct {
	src, dst     string
	sport, dport uint16
	flags, ipLen uint16
}

// checkMirrored reads the records stored in buckets from..to and checks
// that each packet to port 7000 is there an even number of times.
func (s *stack) checkMirrored(ctx context.Context, from, to int64) error {
	n := map[packetKey]int{}
	for _, name := range []string{"redis-a", "redis-b"} {
		s.read(ctx, name, from, to, func(r *record.Record) {
			if r.DstPort == 7000 {
				n[packetKey{r.Src.String(), r.Dst.String(), r.SrcPort, r.DstPort, r.Flags, uint16(r.IPLen)}]++
			}
		})
	}
	odd, total := 0, 0
	var example packetKey
	for k, c := range n {
		total += c
		if c%2 != 0 {
			odd, example = odd+1, k
		}
	}
	if len(n) < 100 {
		return fmt.Errorf("%d distinct packets to port 7000 stored in %d..%d: too few", len(n), from, to)
	}
	if odd > 0 {
		return fmt.Errorf("%d of %d packets stored an odd number of times (by one capture only), e.g. %+v", odd, len(n), example)
	}
	s.logf("%d records of %d distinct packets to port 7000, each stored by both captures", total, len(n))
	return nil
}
