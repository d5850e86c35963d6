//go:build linux

// Package vethlab builds a small network for live capture tests and
// benchmarks: two network namespaces joined by a veth pair, and an
// injector that sends crafted Ethernet/IPv4/TCP frames into one end with
// batched AF_PACKET sends, so the other end receives exactly the frames
// sent. It needs root (CAP_SYS_ADMIN, CAP_NET_RAW) and the ip command.
package vethlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Lab is two namespaces, Tx and Rx, with a veth pair between them: TxIf
// in Tx, RxIf in Rx.
type Lab struct {
	Tx, Rx     string // namespace names
	TxIf, RxIf string
}

// New creates the namespaces and the veth pair, named after prefix (keep it
// short and unique, e.g. "cpt-<pid>"). Close deletes them.
func New(prefix string) (*Lab, error) {
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("the ip command (iproute2) is needed: %w", err)
	}
	l := &Lab{Tx: prefix + "-tx", Rx: prefix + "-rx", TxIf: "veth-tx", RxIf: "veth-rx"}
	steps := [][]string{
		{"netns", "add", l.Tx},
		{"netns", "add", l.Rx},
		{"link", "add", prefix + "-a", "type", "veth", "peer", "name", prefix + "-b"},
		{"link", "set", prefix + "-a", "netns", l.Tx, "name", l.TxIf},
		{"link", "set", prefix + "-b", "netns", l.Rx, "name", l.RxIf},
		{"-n", l.Tx, "link", "set", l.TxIf, "up"},
		{"-n", l.Rx, "link", "set", l.RxIf, "up"},
		{"-n", l.Rx, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			l.Close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	// Keep the kernel's own traffic (IPv6 router solicitations) off the
	// link; it would not match a TCP filter, but it costs time.
	for _, ns := range []string{l.Tx, l.Rx} {
		_ = exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1").Run()
	}
	return l, nil
}

// Close deletes both namespaces (and so the veth pair).
func (l *Lab) Close() error {
	var errs []error
	for _, ns := range []string{l.Tx, l.Rx} {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

// Do runs fn on an OS thread that has entered namespace ns; sockets that
// fn opens belong to ns and stay there.
func Do(ns string, fn func() error) error {
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked when this goroutine ends, so the
		// runtime discards it rather than reuse it in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Flow addresses of crafted frames: source 10.77.(flow/250).(flow%250+1),
// port 20000+flow, to DstIP:port.
var (
	DstIP  = net.IPv4(10, 77, 255, 1).To4()
	dstMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02} // not the receiver's: the IP stack ignores the frames
	srcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
)

// FrameLen is the length of a crafted frame (Ethernet minimum, no FCS).
const FrameLen = 60

// SrcOf is the source address and port of flow i.
func SrcOf(flow int) (net.IP, uint16) {
	return net.IPv4(10, 77, byte(flow/250), byte(flow%250+1)).To4(), uint16(20000 + flow)
}

// Craft writes into b (FrameLen bytes) an Ethernet/IPv4/TCP frame of flow
// to port, with seq as the TCP sequence number.
func Craft(b []byte, flow int, port uint16, seq uint32) {
	_ = b[FrameLen-1]
	clear(b[:FrameLen])
	copy(b[0:6], dstMAC[:])
	copy(b[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40) // IP + TCP, no payload
	ip[8] = 64
	ip[9] = 6
	src, sport := SrcOf(flow)
	copy(ip[12:16], src)
	copy(ip[16:20], DstIP)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	tcp := b[34:54]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], port)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// Injector sends crafted frames out of an interface in batches of
// sendmmsg. Frame k (from 0) belongs to flow k%Flows and carries k/Flows
// as its TCP sequence number, so a receiver can check each flow's order.
type Injector struct {
	fd    int
	flows int
	port  uint16
	bufs  []byte
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	sent  uint64
	batch int
	// size is the length of a frame sent; wrap, when set, puts each
	// crafted frame (at wrapAt) in a tunnel.
	size   int
	wrap   func(b []byte)
	wrapAt int
}

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// NewInjector opens a sender on interface ifname of namespace ns.
func NewInjector(ns, ifname string, flows int, port uint16, batch int) (*Injector, error) {
	in := &Injector{fd: -1, flows: max(flows, 1), port: port, batch: max(batch, 1)}
	err := Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open AF_PACKET socket: %w", err)
		}
		in.fd = fd
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		if in.fd >= 0 {
			unix.Close(in.fd)
		}
		return nil, err
	}
	in.buffers(FrameLen)
	return in, nil
}

// buffers sizes the send buffers for frames of size bytes.
func (in *Injector) buffers(size int) {
	in.size = size
	in.bufs = make([]byte, size*in.batch)
	in.hdrs = make([]mmsghdr, in.batch)
	in.iovs = make([]unix.Iovec, in.batch)
	for i := range in.batch {
		in.iovs[i].Base = &in.bufs[i*size]
		in.iovs[i].SetLen(size)
		in.hdrs[i].hdr.Iov = &in.iovs[i]
		in.hdrs[i].hdr.SetIovlen(1)
	}
}

// VXLANLen is the length of a crafted frame in VXLAN: outer Ethernet,
// IPv4, UDP and VXLAN headers, then the frame.
const VXLANLen = 50 + FrameLen

// WrapVXLAN makes the injector send every frame inside VXLAN (RFC 7348),
// from src to dst, UDP port 4789, network id vni, as a mirror source
// does. Call it before the first Send.
func (in *Injector) WrapVXLAN(src, dst net.IP, vni uint32) {
	in.buffers(VXLANLen)
	in.wrapAt = VXLANLen - FrameLen
	in.wrap = func(b []byte) {
		copy(b[0:6], dstMAC[:])
		copy(b[6:12], srcMAC[:])
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := b[14:34]
		clear(ip)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(VXLANLen-14))
		ip[8] = 64
		ip[9] = 17
		copy(ip[12:16], src.To4())
		copy(ip[16:20], dst.To4())
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		udp := b[34:42]
		binary.BigEndian.PutUint16(udp[0:], 49152)
		binary.BigEndian.PutUint16(udp[2:], 4789)
		binary.BigEndian.PutUint16(udp[4:], uint16(VXLANLen-34))
		binary.BigEndian.PutUint16(udp[6:], 0) // no checksum (IPv4)
		vx := b[42:50]
		binary.BigEndian.PutUint32(vx[0:], 0x08000000)
		binary.BigEndian.PutUint32(vx[4:], vni<<8)
	}
}

// Sent is the number of frames sent so far.
func (in *Injector) Sent() uint64 { return in.sent }

// Send sends the next n frames (n at most the batch size), retrying while
// the device queue is full, and returns the number sent.
func (in *Injector) Send(n int) (int, error) {
	n = min(n, in.batch)
	for i := range n {
		k := in.sent + uint64(i)
		b := in.bufs[i*in.size : (i+1)*in.size]
		Craft(b[in.wrapAt:], int(k%uint64(in.flows)), in.port, uint32(k/uint64(in.flows)))
		if in.wrap != nil {
			in.wrap(b)
		}
	}
	done := 0
	for done < n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(in.fd), uintptr(unsafe.Pointer(&in.hdrs[done])), uintptr(n-done), 0, 0, 0)
		switch errno {
		case 0:
			done += int(r)
			in.sent += uint64(r)
			continue
		case unix.EINTR:
			continue
		case unix.ENOBUFS, unix.EAGAIN:
			time.Sleep(20 * time.Microsecond)
			continue
		}
		return done, fmt.Errorf("sendmmsg: %w", errno)
	}
	return done, nil
}

// Run sends total frames at rate frames per second (0: as fast as it can)
// and returns how long it took.
func (in *Injector) Run(total uint64, rate float64) (time.Duration, error) {
	start := time.Now()
	for in.sent < total {
		n := int(min(uint64(in.batch), total-in.sent))
		if rate > 0 {
			due := uint64(time.Since(start).Seconds() * rate)
			if due <= in.sent {
				time.Sleep(time.Duration(float64(n) / rate * 1e9))
				continue
			}
			n = int(min(uint64(n), due-in.sent))
		}
		if _, err := in.Send(n); err != nil {
			return time.Since(start), err
		}
	}
	return time.Since(start), nil
}

// Close closes the sender.
func (in *Injector) Close() error { return unix.Close(in.fd) }

// ForTest makes a Lab named prefix plus the process id for a test, failing
// it when the namespaces cannot be made, and removes them when it ends.
func ForTest(t testing.TB, prefix string) *Lab {
	t.Helper()
	lab, err := New(fmt.Sprintf("%s%d", prefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	return lab
}
