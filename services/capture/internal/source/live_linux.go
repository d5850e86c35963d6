//go:build linux

package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
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
	Filter    *filter.Filter // nil: every frame
	// Tunnels, when set (mirror mode), is the kernel program in place of
	// Filter's: the tunnel packets to this host.
	Tunnels *filter.Tunnels
	Snaplen int // bytes kept of each frame (at most a block's room)
	// Workers is the number of readers, each with its own ring, joined in
	// one PACKET_FANOUT group that hashes on the flow (0: 1).
	Workers int
	// BlockSize is the size of a ring block in bytes, a multiple of the
	// page size (0: DefaultBlockSize). Blocks is the number of blocks in
	// each reader's ring (0: DefaultBlocks). A reader's ring costs
	// BlockSize*Blocks bytes of locked kernel memory, mapped into capture.
	BlockSize int
	Blocks    int
	// BlockTimeout is how long the kernel waits before it hands over a
	// block that is not full (0: DefaultBlockTimeout); it bounds the delay
	// of a record when traffic is light. Whole milliseconds, at least 1.
	BlockTimeout time.Duration
}

// Ring defaults.
const (
	DefaultBlockSize    = 2 << 20
	DefaultBlocks       = 8
	DefaultBlockTimeout = 200 * time.Millisecond
	defaultSnaplen      = 262144
	// ringFrameSize is tp_frame_size: TPACKET_V3 packs frames of any size
	// into a block, so it is only the unit the kernel checks the request in.
	ringFrameSize = 2048
)

// Live is one reader of a live capture: an AF_PACKET socket with a
// TPACKET_V3 receive ring mapped into memory. The kernel fills the ring's
// blocks with frames and hands each block over whole; NextBlock waits (in
// Go's poller) only when the next block is not ready yet, and the frames
// are read in place. The filter is compiled to classic BPF and runs in the
// kernel; frames carry the kernel's receive timestamp; drops and ring
// freezes come from PACKET_STATISTICS. On a loopback interface each packet
// passes twice (out and in); only the incoming copy is kept.
//
// Interface "any" (AnyInterface) reads every interface, as tcpdump -i any
// does, keeping only what arrives (a packet this host sends is not a
// packet sent to it); every interface that is up must be Ethernet or
// loopback, so one framing fits every frame. It serves a host whose
// interface names or order are not known in advance, such as a container
// on several networks.
//
// OpenLive opens Workers readers in one PACKET_FANOUT group (hash on the
// flow, IP fragments reassembled first), so every packet of a connection
// reaches the same reader, in order.
type Live struct {
	name   string
	worker int
	f      *os.File
	rc     syscall.RawConn
	link   decode.LinkType
	// skipOutgoing: keep only frames that arrive (loopback, where each
	// packet passes twice, and "any").
	skipOutgoing bool

	ring      []byte // the mapping, Blocks*BlockSize bytes
	blockSize int
	blocks    int
	cur       int  // the block to read next (or being read)
	held      bool // the current block is ours until Release
	ready     func(fd uintptr) bool

	ctx     context.Context
	stopCtx func() bool
}

// RingStats are a reader's kernel counters since the last call to Stats.
type RingStats struct {
	Packets uint64 // frames that passed the filter (tp_packets)
	Drops   uint64 // frames dropped: the ring was full (tp_drops)
	Freezes uint64 // times the ring filled and the kernel froze it (tp_freeze_q_cnt)
}

// OpenLive opens cfg.Workers readers on cfg.Interface. It returns once
// every reader is in the fan-out group with the filter in force; frames
// that arrive while the group forms are dropped by the kernel, so no
// packet is read twice.
func OpenLive(cfg LiveConfig) ([]*Live, error) {
	ifi, err := liveInterface(cfg.Interface)
	if err != nil {
		return nil, err
	}
	if cfg.Snaplen <= 0 {
		cfg.Snaplen = defaultSnaplen
	}
	cfg.Workers = max(cfg.Workers, 1)
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.Blocks == 0 {
		cfg.Blocks = DefaultBlocks
	}
	if cfg.BlockTimeout == 0 {
		cfg.BlockTimeout = DefaultBlockTimeout
	}
	if page := os.Getpagesize(); cfg.BlockSize < page || cfg.BlockSize%page != 0 || cfg.BlockSize%ringFrameSize != 0 {
		return nil, fmt.Errorf("ring block size %d: want a multiple of the page size (%d) and of %d", cfg.BlockSize, page, ringFrameSize)
	}
	if cfg.Blocks < 1 || int64(cfg.Blocks)*int64(cfg.BlockSize) > 1<<31 {
		return nil, fmt.Errorf("ring of %d blocks of %d bytes: want 1 block or more, 2 GiB at most", cfg.Blocks, cfg.BlockSize)
	}
	tov := cfg.BlockTimeout.Milliseconds()
	if tov < 1 || tov > 1<<31 {
		return nil, fmt.Errorf("ring block timeout %s: want 1ms or more", cfg.BlockTimeout)
	}

	var ls []*Live
	ok := false
	defer func() {
		if !ok {
			for _, l := range ls {
				l.Close()
			}
		}
	}()
	var prog *unix.SockFprog
	fanoutID := -1
	for w := range cfg.Workers {
		l, p, err := openRing(cfg, ifi, w, uint32(tov))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		prog = p
		if cfg.Workers > 1 {
			if fanoutID, err = l.joinFanout(fanoutID); err != nil {
				return nil, err
			}
		}
	}
	// Every reader is in the group: let frames in.
	for _, l := range ls {
		if err := l.setFilter(prog); err != nil {
			return nil, err
		}
		// Counters start now.
		_, _ = l.Stats()
	}
	ok = true
	return ls, nil
}

// AnyInterface reads every interface.
const AnyInterface = "any"

// liveInterface finds the interface to bind to: for "any", index 0 (every
// interface) once every interface that is up is known to carry Ethernet
// frames (loopback's are too).
// isEthernet reports whether frames of an interface of hardware type t
// (ARPHRD_*) are Ethernet frames.
func isEthernet(t uint16) bool {
	lt, ok := decode.LinkOfARPHRD(t)
	return ok && lt == decode.LinkEthernet
}

func liveInterface(name string) (*net.Interface, error) {
	if name != AnyInterface {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w", name, err)
		}
		return ifi, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("interface any: list the interfaces: %w", err)
	}
	// The hardware type comes from SIOCGIFHWADDR on a socket of this
	// network namespace (sysfs may show another's).
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("interface any: %w", err)
	}
	defer unix.Close(fd)
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		ifr, err := unix.NewIfreq(ifi.Name)
		if err == nil {
			err = unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr)
		}
		if err != nil {
			return nil, fmt.Errorf("interface any: the hardware type of %s: %w", ifi.Name, err)
		}
		if t := ifr.Uint16(); !isEthernet(t) {
			return nil, fmt.Errorf("interface any: %s has hardware type %d (ARPHRD), not Ethernet: name the interface to capture on instead", ifi.Name, t)
		}
	}
	return &net.Interface{Index: 0, Name: AnyInterface, Flags: net.FlagLoopback}, nil
}

// openRing opens one reader, bound and mapped, with a filter that drops
// everything; it returns the real filter (nil: none) to put in its place.
func openRing(cfg LiveConfig, ifi *net.Interface, worker int, tovMillis uint32) (*Live, *unix.SockFprog, error) {
	// Protocol 0: the socket receives nothing until it is bound with
	// ETH_P_ALL below, after the drop-all filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	l := &Live{name: cfg.Interface, worker: worker, skipOutgoing: ifi.Flags&net.FlagLoopback != 0,
		blockSize: cfg.BlockSize, blocks: cfg.Blocks}
	l.f = os.NewFile(uintptr(fd), "packet:"+cfg.Interface)
	if l.rc, err = l.f.SyscallConn(); err != nil {
		l.f.Close()
		return nil, nil, err
	}
	fail := func(err error) (*Live, *unix.SockFprog, error) {
		l.Close()
		return nil, nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		return fail(fmt.Errorf("bind to %s: %w", cfg.Interface, err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(fmt.Errorf("getsockname on %s: %w", cfg.Interface, err))
	}
	ll, _ := sa.(*unix.SockaddrLinklayer)
	if ll == nil {
		return fail(fmt.Errorf("getsockname on %s: not a link-layer address", cfg.Interface))
	}
	l.link = decode.LinkEthernet // any: every interface is Ethernet, checked by liveInterface
	if ifi.Index != 0 {
		var ok bool
		if l.link, ok = decode.LinkOfARPHRD(ll.Hatype); !ok {
			return fail(fmt.Errorf("interface %s has hardware type %d (ARPHRD), which capture does not decode (link types %v only)", cfg.Interface, ll.Hatype, decode.LiveLinks()))
		}
	}
	var prog *unix.SockFprog
	if cfg.Tunnels != nil {
		ins, err := cfg.Tunnels.Program(l.link, filter.ProgramOptions{Snaplen: uint32(cfg.Snaplen), SkipOutgoing: l.skipOutgoing})
		if err != nil {
			return fail(fmt.Errorf("compile tunnel filter %s: %w", cfg.Tunnels, err))
		}
		if prog, err = assemble(ins); err != nil {
			return fail(fmt.Errorf("assemble tunnel filter %s: %w", cfg.Tunnels, err))
		}
	} else if cfg.Filter != nil {
		ins, err := cfg.Filter.Program(l.link, filter.ProgramOptions{Snaplen: uint32(cfg.Snaplen), SkipOutgoing: l.skipOutgoing})
		if err != nil {
			return fail(fmt.Errorf("compile filter %q: %w", cfg.Filter, err))
		}
		if prog, err = assemble(ins); err != nil {
			return fail(fmt.Errorf("assemble filter %q: %w", cfg.Filter, err))
		}
	} else {
		// Keep Snaplen bytes of every frame.
		if prog, err = assemble([]bpf.Instruction{bpf.RetConstant{Val: uint32(cfg.Snaplen)}}); err != nil {
			return fail(err)
		}
	}
	dropAll, err := assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return fail(err)
	}
	if err := l.setFilter(dropAll); err != nil {
		return fail(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail(fmt.Errorf("set TPACKET_V3 on %s: %w", cfg.Interface, err))
	}
	if l.skipOutgoing && cfg.Workers == 1 {
		// The outgoing copy of each packet on lo is not even queued (the
		// filter also drops it, for kernels without this option).
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(cfg.BlockSize),
		Block_nr:       uint32(cfg.Blocks),
		Frame_size:     ringFrameSize,
		Frame_nr:       uint32(cfg.Blocks * (cfg.BlockSize / ringFrameSize)),
		Retire_blk_tov: tovMillis,
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail(fmt.Errorf("set up a receive ring of %d blocks of %d bytes on %s: %w", cfg.Blocks, cfg.BlockSize, cfg.Interface, err))
	}
	l.ring, err = unix.Mmap(fd, 0, cfg.Blocks*cfg.BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("map the receive ring (%d bytes) of %s: %w", cfg.Blocks*cfg.BlockSize, cfg.Interface, err))
	}
	l.ready = l.blockReady
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail(fmt.Errorf("bind to %s: %w", cfg.Interface, err))
	}
	return l, prog, nil
}

func assemble(ins []bpf.Instruction) (*unix.SockFprog, error) {
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, err
	}
	fs := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		fs[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &unix.SockFprog{Len: uint16(len(fs)), Filter: &fs[0]}, nil
}

// setFilter attaches prog, replacing the socket's filter.
func (l *Live) setFilter(prog *unix.SockFprog) error {
	var serr error
	err := l.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, prog)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("attach BPF filter on %s: %w", l.name, err)
	}
	return nil
}

// joinFanout puts the socket in fan-out group id, or in a new group with
// an id the kernel picks when id < 0, and returns the group's id.
func (l *Live) joinFanout(id int) (int, error) {
	flags := unix.PACKET_FANOUT_FLAG_DEFRAG
	if l.skipOutgoing {
		flags |= unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
	}
	val := id
	if id < 0 {
		val = (unix.PACKET_FANOUT_FLAG_UNIQUEID) << 16
	}
	val |= (unix.PACKET_FANOUT_HASH | flags) << 16
	var got int
	var serr error
	err := l.rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_FANOUT, val); serr != nil {
			return
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_FANOUT)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("join PACKET_FANOUT group on %s (reader %d): %w", l.name, l.worker, err)
	}
	return got & 0xffff, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// LinkType is the link type of the frames.
func (l *Live) LinkType() decode.LinkType { return l.link }

// Worker is the reader's number in its group, from 0.
func (l *Live) Worker() int { return l.worker }

// SkipsOutgoing reports a capture that keeps only the frames that arrive:
// on a loopback interface, or on every interface.
func (l *Live) SkipsOutgoing() bool { return l.skipOutgoing }

func (l *Live) block(i int) []byte {
	return l.ring[i*l.blockSize : (i+1)*l.blockSize : (i+1)*l.blockSize]
}

func (l *Live) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&l.ring[i*l.blockSize+8]))
}

// blockReady is called by the poller: true once the kernel has handed
// the current block over.
func (l *Live) blockReady(uintptr) bool {
	return atomic.LoadUint32(l.status(l.cur))&tpStatusUser != 0
}

// NextBlock hands back the block it returned last, if Release was not
// called, then waits for the next block. The block's frames point into the
// ring and stay valid until Release or the next call. Outgoing frames on a
// loopback interface are skipped by the block's walk.
func (l *Live) NextBlock(ctx context.Context) (Block, error) {
	l.Release()
	if ctx != l.ctx {
		if l.stopCtx != nil {
			l.stopCtx()
		}
		_ = l.f.SetReadDeadline(time.Time{})
		l.ctx = ctx
		l.stopCtx = context.AfterFunc(ctx, func() { _ = l.f.SetReadDeadline(time.Unix(1, 0)) })
	}
	if err := ctx.Err(); err != nil {
		return Block{}, err
	}
	if l.ring == nil {
		return Block{}, fmt.Errorf("read the ring of %s: %w", l.name, os.ErrClosed)
	}
	if !l.blockReady(0) {
		if err := l.rc.Read(l.ready); err != nil {
			if ctx.Err() != nil {
				return Block{}, ctx.Err()
			}
			return Block{}, fmt.Errorf("wait for the ring of %s: %w", l.name, err)
		}
	}
	l.held = true
	blk := ParseBlock(l.block(l.cur))
	blk.SkipOutgoing = l.skipOutgoing
	return blk, nil
}

// Pending reports whether the next block is already handed over, so
// NextBlock would not wait.
func (l *Live) Pending() bool {
	if l.ring == nil {
		return false
	}
	next := l.cur
	if l.held {
		if next++; next == l.blocks {
			next = 0
		}
	}
	return atomic.LoadUint32(l.status(next))&tpStatusUser != 0
}

// Release hands the current block back to the kernel and moves to the
// next one. Frames of the block must not be used after it.
func (l *Live) Release() {
	if !l.held {
		return
	}
	atomic.StoreUint32(l.status(l.cur), tpStatusKernel)
	l.held = false
	l.cur++
	if l.cur == l.blocks {
		l.cur = 0
	}
}

// Stats returns the kernel's counters since the last call, from
// PACKET_STATISTICS (reading them resets them).
func (l *Live) Stats() (RingStats, error) {
	var st *unix.TpacketStatsV3
	var gerr error
	err := l.rc.Control(func(fd uintptr) {
		st, gerr = unix.GetsockoptTpacketStatsV3(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return RingStats{}, fmt.Errorf("read PACKET_STATISTICS on %s: %w", l.name, err)
	}
	return RingStats{Packets: uint64(st.Packets), Drops: uint64(st.Drops), Freezes: uint64(st.Freeze_q_cnt)}, nil
}

// Close closes the socket, which makes a NextBlock waiting on it return,
// and unmaps the ring. Call it once the reader is done with its blocks.
func (l *Live) Close() error {
	if l.stopCtx != nil {
		l.stopCtx()
	}
	err := l.f.Close()
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	if l.ring != nil {
		if uerr := unix.Munmap(l.ring); uerr != nil && err == nil {
			err = uerr
		}
		l.ring = nil
	}
	return err
}
