//go:build linux

// Command vxlanmirror is a mirror source, as a cloud's traffic mirroring
// is: it copies the TCP frames that arrive for a listen address on an
// interface and sends each, whole, inside VXLAN (RFC 7348) over UDP to a
// mirror target, where capture runs with DECAP=vxlan. The compose stack's
// MIRROR=1 override runs it beside capture. It reads with capture's ring
// source and kernel filter, so it needs CAP_NET_RAW.
//
//	vxlanmirror -i any -listen 0.0.0.0:7000 -target capture-mirror:4789 -vni 4242
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/services/capture/internal/source"
)

// config is vxlanmirror's settings.
type config struct {
	iface, listen, target string
	vni                   uint32
}

func main() {
	var c config
	var vni uint
	flag.StringVar(&c.iface, "i", "any", "`interface` to copy frames from (any: every interface)")
	flag.StringVar(&c.listen, "listen", "0.0.0.0:7000", "copy the TCP frames sent to this `IP:PORT`")
	flag.StringVar(&c.target, "target", "", "mirror target, `host:port` (UDP, VXLAN)")
	flag.UintVar(&vni, "vni", 4242, "VXLAN network `id`, 0..16777215")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if vni > 1<<24-1 {
		log.Error("bad -vni", "vni", vni)
		os.Exit(2)
	}
	c.vni = uint32(vni)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, nil, log); err != nil {
		log.Error("vxlanmirror", "err", err)
		os.Exit(1)
	}
}

// run copies frames until ctx ends; ready, when set, is called once the
// ring is open.
func run(ctx context.Context, c config, ready func(), log *slog.Logger) error {
	ap, err := filter.ParseListen(c.listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", c.listen, err)
	}
	dst, err := net.ResolveUDPAddr("udp", c.target)
	if err != nil || c.target == "" {
		return fmt.Errorf("-target %q: want host:port: %v", c.target, err)
	}
	// Not connected: an ICMP port unreachable from a target with no
	// socket on the port (capture reads below the stack) must not fail
	// the next send.
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return fmt.Errorf("open UDP socket: %w", err)
	}
	defer conn.Close()
	lives, err := source.OpenLive(source.LiveConfig{Interface: c.iface, Filter: filter.FromListen(ap), Snaplen: 65535, Workers: 1})
	if err != nil {
		return fmt.Errorf("-i %q: %w", c.iface, err)
	}
	l := lives[0]
	defer l.Close()
	log.Info("mirroring", "interface", c.iface, "listen", ap.String(), "target", dst.String(), "vni", c.vni)
	if ready != nil {
		ready()
	}
	var sent, failed uint64
	defer func() { log.Info("stopped", "sent", sent, "send_errors", failed) }()
	buf := make([]byte, 8, 8+65535)
	binary.BigEndian.PutUint32(buf[0:], 0x08000000) // the VNI flag
	binary.BigEndian.PutUint32(buf[4:], c.vni<<8)
	for {
		blk, err := l.NextBlock(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for f, ok := blk.Next(); ok; f, ok = blk.Next() {
			if _, err := conn.WriteToUDP(append(buf[:8], f.Data...), dst); err != nil {
				if failed++; failed == 1 || errors.Is(err, net.ErrClosed) {
					log.Warn("send", "err", err)
				}
				continue
			}
			sent++
		}
		l.Release()
	}
}
