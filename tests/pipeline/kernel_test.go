package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// seen is what the test's own packet counter saw of one TCP packet.
type seen struct {
	Src     netip.Addr
	SrcPort uint16
	Flags   uint16
}

// kernelCounter counts, independently of capture, the IPv4 TCP packets
// the kernel delivers on lo to 127.0.0.1:port. It reads a raw AF_PACKET
// socket of its own and, as libpcap does, ignores the outgoing copy that
// the loopback device also shows.
type kernelCounter struct {
	fd   int
	port uint16
	mu   sync.Mutex
	pkts []seen
	stop chan struct{}
	done chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func newKernelCounter(t testing.TB, port int) *kernelCounter {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("raw socket (tests run as root): %v", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
		t.Fatal(err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	k := &kernelCounter{fd: fd, port: uint16(port), stop: make(chan struct{}), done: make(chan struct{})}
	go k.loop()
	t.Cleanup(k.close)
	return k
}

func (k *kernelCounter) loop() {
	defer close(k.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-k.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(k.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p := buf[:n]
		if len(p) < 14+20 || binary.BigEndian.Uint16(p[12:14]) != 0x0800 {
			continue
		}
		ip := p[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 6 || len(ip) < ihl+14 || [4]byte(ip[16:20]) != [4]byte{127, 0, 0, 1} {
			continue
		}
		tcp := ip[ihl:]
		if binary.BigEndian.Uint16(tcp[2:4]) != k.port {
			continue
		}
		s := seen{Src: netip.AddrFrom4([4]byte(ip[12:16])), SrcPort: binary.BigEndian.Uint16(tcp[0:2]),
			Flags: binary.BigEndian.Uint16(tcp[12:14]) & 0x1ff}
		k.mu.Lock()
		k.pkts = append(k.pkts, s)
		k.mu.Unlock()
	}
}

// drops is the kernel's count of packets dropped for this socket.
func (k *kernelCounter) drops() uint32 {
	st, err := unix.GetsockoptTpacketStats(k.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return st.Drops
}

func (k *kernelCounter) snapshot() []seen {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]seen(nil), k.pkts...)
}

func (k *kernelCounter) close() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
		<-k.done
		unix.Close(k.fd)
	}
}

// traffic opens conns connections from each of the source addresses
// 127.0.<block>.1 … 127.0.<block>.<sources>, writes a line on each and
// closes it. It returns when every connection is closed.
func traffic(t testing.TB, port, block, sources, conns int) {
	t.Helper()
	if err := sendTraffic(port, block, sources, conns); err != nil {
		t.Fatalf("traffic: %v", err)
	}
}

// sendTraffic is traffic for goroutines other than the test's own.
func sendTraffic(port, block, sources, conns int) error {
	var wg sync.WaitGroup
	errs := make(chan error, sources*conns)
	sem := make(chan struct{}, 16)
	for s := 1; s <= sources; s++ {
		src := net.IPv4(127, 0, byte(block), byte(s))
		for c := 0; c < conns; c++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
				conn, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					errs <- err
					return
				}
				_, err = fmt.Fprintf(conn, "hello from %s\n", src)
				conn.Close()
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	return <-errs
}
