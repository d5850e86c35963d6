package samples

import (
	"encoding/binary"
	"net/netip"
)

// Spec describes a synthetic TCP/IP frame for tests.
type Spec struct {
	Tags             []uint16 // VLAN tag EtherTypes before the IP header (0x8100, 0x88a8)
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Flags            uint16
	Proto            uint8   // IP protocol; 0 means TCP
	FragOffset       uint16  // fragment offset in 8-byte units (IPv4 header, or an IPv6 fragment header)
	Ext              []uint8 // IPv6 extension headers before the upper layer (0, 43, 44, 51, 60)
	IPOptions        int     // IPv4 option bytes (a multiple of 4)
	Payload          int     // payload bytes after the TCP header
}

// Ethernet returns s as an Ethernet frame with zero MAC addresses.
func Ethernet(s Spec) []byte {
	b := make([]byte, 12, 64)
	for _, t := range s.Tags {
		b = binary.BigEndian.AppendUint16(b, t)
		b = append(b, 0, 7) // TCI: VLAN 7
	}
	et := uint16(0x0800)
	if s.Src.Is6() {
		et = 0x86dd
	}
	b = binary.BigEndian.AppendUint16(b, et)
	return append(b, IP(s)...)
}

// IP returns s as an IP packet (IPv4 or IPv6 by the family of Src).
func IP(s Spec) []byte {
	proto := s.Proto
	if proto == 0 {
		proto = 6
	}
	var l4 []byte
	if proto == 6 {
		l4 = make([]byte, 20+s.Payload)
		binary.BigEndian.PutUint16(l4[0:], s.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], s.DstPort)
		l4[12] = 5<<4 | byte(s.Flags>>8&1)
		l4[13] = byte(s.Flags)
	} else {
		l4 = make([]byte, 8+s.Payload)
		binary.BigEndian.PutUint16(l4[0:], s.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], s.DstPort)
	}
	if s.Src.Is4() {
		ihl := 20 + s.IPOptions
		h := make([]byte, ihl)
		h[0] = 4<<4 | byte(ihl/4)
		binary.BigEndian.PutUint16(h[2:], uint16(ihl+len(l4)))
		binary.BigEndian.PutUint16(h[6:], s.FragOffset&0x1fff)
		h[8] = 64
		h[9] = proto
		src, dst := s.Src.As4(), s.Dst.As4()
		copy(h[12:], src[:])
		copy(h[16:], dst[:])
		return append(h, l4...)
	}
	var ext []byte
	nh := proto
	for i := len(s.Ext) - 1; i >= 0; i-- {
		var e []byte
		switch s.Ext[i] {
		case 44:
			e = make([]byte, 8)
			binary.BigEndian.PutUint16(e[2:], s.FragOffset<<3)
		case 51:
			e = make([]byte, 16)
			e[1] = 2 // (2+2)*4 bytes
		default:
			e = make([]byte, 8)
		}
		e[0] = nh
		nh = s.Ext[i]
		ext = append(e, ext...)
	}
	h := make([]byte, 40)
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
	h[6] = nh
	h[7] = 64
	src, dst := s.Src.As16(), s.Dst.As16()
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	return append(append(h, ext...), l4...)
}
