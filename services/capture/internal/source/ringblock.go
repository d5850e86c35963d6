package source

import (
	"encoding/binary"
	"strconv"
)

// A TPACKET_V3 receive ring is a run of blocks. The kernel fills a block with
// frames, then hands it to user space by setting TP_STATUS_USER in the block
// header; user space reads the frames and hands the block back by setting its
// status to TP_STATUS_KERNEL. Every offset, length and count in a block is
// written by the kernel into memory that user space can also write, so the
// walker below checks each one against the block before it reads through it:
// a corrupt block ends in a Fault, never in a read outside the block.
//
// Layouts (linux/if_packet.h), little or big endian as the host:
//
//	tpacket_block_desc: version u32 @0, offset_to_priv u32 @4, then
//	tpacket_hdr_v1:     block_status u32 @8, num_pkts u32 @12,
//	                    offset_to_first_pkt u32 @16, blk_len u32 @20,
//	                    seq_num u64 @24, ts_first/ts_last @32/@40 (48 bytes)
//	tpacket3_hdr:       tp_next_offset u32 @0, tp_sec @4, tp_nsec @8,
//	                    tp_snaplen @12, tp_len @16, tp_status @20,
//	                    tp_mac u16 @24, tp_net u16 @26, tp_rxhash @28,
//	                    tp_vlan_tci u32 @32, tp_vlan_tpid u16 @36 (48 bytes),
//	                    then struct sockaddr_ll (20 bytes, sll_pkttype @10)
const (
	blockHdrLen   = 48 // tpacket_block_desc with tpacket_hdr_v1
	frameHdrLen   = 48 // TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
	sockaddrLLLen = 20 // struct sockaddr_ll
	// frameAlign is the alignment of frames in a block (V3_ALIGNMENT).
	frameAlign = 8
	// minFrameLen is the least room a frame takes: its header and the
	// link address, aligned.
	minFrameLen = (frameHdrLen + sockaddrLLLen + frameAlign - 1) &^ (frameAlign - 1)

	tpStatusKernel    = 0
	tpStatusUser      = 1 << 0
	tpStatusLosing    = 1 << 2
	tpStatusVLANValid = 1 << 4
	tpStatusBlkTmo    = 1 << 5
	tpStatusVLANTPID  = 1 << 6
	// blockStatusKnown are the bits the kernel sets in a block it hands
	// over (prb_close_block): user, losing (drops happened) and timed out.
	blockStatusKnown = tpStatusUser | tpStatusLosing | tpStatusBlkTmo

	packetOutgoing = 4 // PACKET_OUTGOING in sll_pkttype
	ethPVLAN       = 0x8100
)

// Fault is why the walk of a ring block stopped before its end.
type Fault uint8

// Faults. FaultNone is a block read to its end.
const (
	FaultNone Fault = iota
	// FaultShortBlock: the block is shorter than its own header.
	FaultShortBlock
	// FaultBadStatus: the block status has bits the kernel never sets.
	FaultBadStatus
	// FaultNoFrames: a block handed over with no frame in it.
	FaultNoFrames
	// FaultBadBlockLen: blk_len is shorter than the header or past the block.
	FaultBadBlockLen
	// FaultBadFirstOffset: offset_to_first_pkt points inside the header
	// or past the block.
	FaultBadFirstOffset
	// FaultFramePastBlock: a frame header runs past the block.
	FaultFramePastBlock
	// FaultBadNextOffset: tp_next_offset is zero before the last frame,
	// unaligned, shorter than a frame, or points past the block.
	FaultBadNextOffset
	// FaultBadMac: tp_mac points inside the frame header or past the block.
	FaultBadMac
	// FaultSnaplenPastBlock: the captured bytes run past the block (or
	// into the next frame), or exceed the frame's wire length.
	FaultSnaplenPastBlock

	NumFaults
)

var faultNames = [NumFaults]string{
	FaultNone:             "none",
	FaultShortBlock:       "short_block",
	FaultBadStatus:        "bad_block_status",
	FaultNoFrames:         "no_frames",
	FaultBadBlockLen:      "bad_block_len",
	FaultBadFirstOffset:   "bad_first_offset",
	FaultFramePastBlock:   "frame_past_block",
	FaultBadNextOffset:    "bad_next_offset",
	FaultBadMac:           "bad_mac_offset",
	FaultSnaplenPastBlock: "snaplen_past_block",
}

// String is the fault's metric label.
func (f Fault) String() string {
	if f < NumFaults {
		return faultNames[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Faults lists the faults that count as ring errors, for metrics.
func Faults() []Fault {
	out := make([]Fault, 0, NumFaults-1)
	for f := FaultNone + 1; f < NumFaults; f++ {
		out = append(out, f)
	}
	return out
}

// Frame is one frame of a ring block. Data points into the block and is
// valid until the block is handed back.
type Frame struct {
	TS      int64  // tp_sec/tp_nsec, Unix nanoseconds
	Data    []byte // the captured bytes, from tp_mac, tp_snaplen long
	WireLen uint32 // tp_len, the frame's length on the wire
	PktType uint8  // sll_pkttype: PACKET_HOST, PACKET_OUTGOING, ...
	// VLAN is the 802.1Q tag the kernel took off the frame (tp_vlan_tci,
	// valid when HasVLAN); VLANTPID its tag protocol (0x8100 unless the
	// kernel says otherwise).
	VLAN     uint16
	VLANTPID uint16
	HasVLAN  bool
}

// Block walks the frames of one TPACKET_V3 block. The zero Block has no
// frames.
type Block struct {
	b     []byte // the block, cut to blk_len
	left  uint32 // frames not yet returned
	off   uint32 // offset of the next frame
	fault Fault
	// Status is the block status read when the block was parsed.
	Status uint32
	// Frames is num_pkts as the kernel wrote it.
	Frames uint32
	frame  Frame // the last frame Next returned
	// SkipOutgoing makes Next pass over frames the host sent
	// (PACKET_OUTGOING): on a loopback interface each packet is seen
	// leaving and arriving.
	SkipOutgoing bool
}

var ne = binary.NativeEndian

// BlockReady reports whether the kernel has handed the block over (its
// status has TP_STATUS_USER). A block too short to hold a status is not.
func BlockReady(b []byte) bool {
	return len(b) >= blockHdrLen && ne.Uint32(b[8:])&tpStatusUser != 0
}

// ParseBlock checks the header of a block that the kernel handed over and
// returns a walker over its frames. A header fault gives a Block with no
// frames whose Fault says why.
func ParseBlock(b []byte) Block {
	if len(b) < blockHdrLen {
		return Block{fault: FaultShortBlock}
	}
	st := ne.Uint32(b[8:])
	blk := Block{Status: st, Frames: ne.Uint32(b[12:])}
	switch {
	case st&tpStatusUser == 0 || st&^blockStatusKnown != 0:
		blk.fault = FaultBadStatus
		return blk
	case blk.Frames == 0:
		blk.fault = FaultNoFrames
		return blk
	}
	// blk_len covers the header and every frame, each aligned.
	n := ne.Uint32(b[20:])
	if n < blockHdrLen || uint64(n) > uint64(len(b)) {
		blk.fault = FaultBadBlockLen
		return blk
	}
	b = b[:n]
	first := ne.Uint32(b[16:])
	if first < blockHdrLen || uint64(first)+frameHdrLen > uint64(len(b)) {
		blk.fault = FaultBadFirstOffset
		return blk
	}
	if uint64(blk.Frames) > uint64(len(b)-int(first))/minFrameLen+1 {
		// More frames than the block could hold: the walk would find out
		// frame by frame; say so at once.
		blk.fault = FaultFramePastBlock
		return blk
	}
	blk.b, blk.left, blk.off = b, blk.Frames, first
	return blk
}

// Fault is why the walk stopped early, or FaultNone. It is final once Next
// has returned false.
func (k *Block) Fault() Fault { return k.fault }

// Next returns the next frame, or false at the end of the block or at the
// first inconsistency (see Fault). It reads nothing outside the block. The
// frame is valid until the next call.
func (k *Block) Next() (*Frame, bool) {
	for k.left > 0 {
		b, off := k.b, uint64(k.off)
		if off+frameHdrLen+sockaddrLLLen > uint64(len(b)) {
			return k.stop(FaultFramePastBlock)
		}
		h := b[off : off+frameHdrLen+sockaddrLLLen]
		next := ne.Uint32(h[0:])
		snap := ne.Uint32(h[12:])
		wire := ne.Uint32(h[16:])
		mac := uint64(ne.Uint16(h[24:]))
		// The frame may use the bytes up to the next frame, or to the end
		// of the block for the last one.
		end := uint64(len(b))
		if k.left > 1 {
			if next == 0 || next%frameAlign != 0 || next < minFrameLen || off+uint64(next) > end {
				return k.stop(FaultBadNextOffset)
			}
			end = off + uint64(next)
		}
		if mac < frameHdrLen+sockaddrLLLen || off+mac > end {
			return k.stop(FaultBadMac)
		}
		if off+mac+uint64(snap) > end || snap > wire {
			return k.stop(FaultSnaplenPastBlock)
		}
		k.left--
		k.off = uint32(end) // the last frame leaves off at the end; left is 0
		pkt := h[frameHdrLen+10]
		if k.SkipOutgoing && pkt == packetOutgoing {
			continue
		}
		f := &k.frame
		f.TS = int64(ne.Uint32(h[4:]))*1e9 + int64(ne.Uint32(h[8:]))
		f.Data = b[off+mac : off+mac+uint64(snap) : off+mac+uint64(snap)]
		f.WireLen = wire
		f.PktType = pkt
		f.HasVLAN, f.VLAN, f.VLANTPID = false, 0, 0
		if status := ne.Uint32(h[20:]); status&tpStatusVLANValid != 0 {
			f.HasVLAN = true
			f.VLAN = uint16(ne.Uint32(h[32:]))
			f.VLANTPID = ethPVLAN
			if status&tpStatusVLANTPID != 0 {
				f.VLANTPID = ne.Uint16(h[36:])
			}
		}
		return f, true
	}
	return nil, false
}

func (k *Block) stop(f Fault) (*Frame, bool) {
	k.fault, k.left = f, 0
	return nil, false
}
