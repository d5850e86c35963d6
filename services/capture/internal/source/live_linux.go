//go:build linux

package source

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// LiveConfig configures a live capture.
type LiveConfig struct {
	Interface string
	Filter    *filter.Filter
	Snaplen   int // bytes kept of each frame
	RcvBuf    int // socket receive buffer in bytes (0: 8 MiB)
}

// Live captures frames from one interface through an AF_PACKET socket,
// without libpcap: the filter is compiled to classic BPF and attached before
// the socket is bound, so no unfiltered frame is queued; frames carry the
// kernel's receive timestamp (SO_TIMESTAMPNS); kernel drops are read with
// PACKET_STATISTICS. On a loopback interface each packet passes twice (out
// and in); only the incoming copy is kept.
//
// The socket is non-blocking and registered with Go's poller, so a read
// waiting for a frame returns as soon as its context ends.
type Live struct {
	name     string
	f        *os.File
	rc       syscall.RawConn
	link     decode.LinkType
	loopback bool

	buf  []byte
	oob  []byte
	from unix.RawSockaddrLinklayer
	iov  unix.Iovec
	msg  unix.Msghdr
	recv func(fd uintptr) bool // l.read, bound once

	// results of the last read
	n   int
	err error

	ctx     context.Context
	stopCtx func() bool
}

const defaultRcvBuf = 8 << 20

// OpenLive opens a capture on cfg.Interface.
func OpenLive(cfg LiveConfig) (*Live, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", cfg.Interface, err)
	}
	if cfg.Snaplen <= 0 {
		cfg.Snaplen = 262144
	}
	if cfg.RcvBuf <= 0 {
		cfg.RcvBuf = defaultRcvBuf
	}
	// Protocol 0: the socket receives nothing until it is bound with
	// ETH_P_ALL below, after the filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("bind to %s: %w", cfg.Interface, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname on %s: %w", cfg.Interface, err)
	}
	ll, _ := sa.(*unix.SockaddrLinklayer)
	if ll == nil {
		return nil, fmt.Errorf("getsockname on %s: not a link-layer address", cfg.Interface)
	}
	l := &Live{name: cfg.Interface, loopback: ifi.Flags&net.FlagLoopback != 0}
	var framing filter.Framing
	switch ll.Hatype {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		framing, l.link = filter.FramingEthernet, decode.LinkEthernet
	case unix.ARPHRD_NONE, unix.ARPHRD_RAWIP:
		framing, l.link = filter.FramingRawIP, decode.LinkRaw
	default:
		return nil, fmt.Errorf("interface %s has hardware type %d (ARPHRD), which capture does not decode (Ethernet, loopback and raw IP only)", cfg.Interface, ll.Hatype)
	}
	if cfg.Filter != nil {
		prog, err := cfg.Filter.Program(framing, filter.ProgramOptions{Snaplen: uint32(cfg.Snaplen), SkipOutgoing: l.loopback})
		if err != nil {
			return nil, fmt.Errorf("compile filter %q: %w", cfg.Filter, err)
		}
		raw, err := bpf.Assemble(prog)
		if err != nil {
			return nil, fmt.Errorf("assemble filter %q: %w", cfg.Filter, err)
		}
		ins := make([]unix.SockFilter, len(raw))
		for i, r := range raw {
			ins[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		fprog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
			return nil, fmt.Errorf("attach BPF filter: %w", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("enable SO_TIMESTAMPNS: %w", err)
	}
	// SO_RCVBUFFORCE passes the rmem_max limit when privileged.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RcvBuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.RcvBuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("bind to %s: %w", cfg.Interface, err)
	}
	// Counters start now.
	_, _ = unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)

	l.f = os.NewFile(uintptr(fd), "packet:"+cfg.Interface)
	if l.rc, err = l.f.SyscallConn(); err != nil {
		l.f.Close()
		ok = true // closed with the file
		return nil, err
	}
	ok = true
	l.buf = make([]byte, cfg.Snaplen)
	l.oob = make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))*2)
	l.iov.Base = &l.buf[0]
	l.msg.Name = (*byte)(unsafe.Pointer(&l.from))
	l.msg.Iov = &l.iov
	l.msg.SetIovlen(1)
	l.msg.Control = &l.oob[0]
	l.recv = l.read
	return l, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// LinkType is the link type of the frames Next returns.
func (l *Live) LinkType() decode.LinkType { return l.link }

// read is called by the poller when the socket is readable; it returns
// false to wait for more.
func (l *Live) read(fd uintptr) bool {
	for {
		l.iov.SetLen(len(l.buf))
		l.msg.Namelen = unix.SizeofSockaddrLinklayer
		l.msg.SetControllen(len(l.oob))
		l.msg.Flags = 0
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&l.msg)), 0)
		switch errno {
		case 0:
			l.n, l.err = int(n), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		l.n, l.err = 0, errno
		return true
	}
}

// Next waits for the next frame. The frame is valid until the next call.
func (l *Live) Next(ctx context.Context) (Packet, error) {
	if ctx != l.ctx {
		if l.stopCtx != nil {
			l.stopCtx()
		}
		_ = l.f.SetReadDeadline(time.Time{})
		l.ctx = ctx
		l.stopCtx = context.AfterFunc(ctx, func() { _ = l.f.SetReadDeadline(time.Unix(1, 0)) })
	}
	for {
		if err := ctx.Err(); err != nil {
			return Packet{}, err
		}
		if err := l.rc.Read(l.recv); err != nil {
			if ctx.Err() != nil {
				return Packet{}, ctx.Err()
			}
			return Packet{}, fmt.Errorf("read from %s: %w", l.name, err)
		}
		if l.err != nil {
			return Packet{}, fmt.Errorf("read from %s: %w", l.name, l.err)
		}
		if l.loopback && l.from.Pkttype == unix.PACKET_OUTGOING {
			continue // the same packet arrives again as incoming
		}
		ts := l.timestamp()
		if ts == 0 {
			ts = time.Now().UnixNano()
		}
		return Packet{TS: ts, Link: l.link, Data: l.buf[:l.n]}, nil
	}
}

// timestamp finds SCM_TIMESTAMPNS among the control messages of the last
// read, or returns 0.
func (l *Live) timestamp() int64 {
	oob := l.oob[:l.msg.Controllen]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS &&
			int(h.Len) >= unix.CmsgLen(16) {
			data := oob[unix.CmsgLen(0):]
			sec := int64(binary.NativeEndian.Uint64(data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(data[8:16]))
			return sec*1e9 + nsec
		}
		oob = oob[min(unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// Drops returns the frames the kernel dropped since the last call (its
// receive queue was full), from PACKET_STATISTICS.
func (l *Live) Drops() (uint64, error) {
	var st *unix.TpacketStats
	var gerr error
	err := l.rc.Control(func(fd uintptr) {
		st, gerr = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return 0, fmt.Errorf("read PACKET_STATISTICS on %s: %w", l.name, err)
	}
	return uint64(st.Drops), nil
}

// Close closes the socket; a Next waiting on it returns.
func (l *Live) Close() error {
	if l.stopCtx != nil {
		l.stopCtx()
	}
	err := l.f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
