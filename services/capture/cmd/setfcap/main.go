// Command setfcap gives a file capabilities, as setcap(8) does, for image
// builds whose base has no libcap tools:
//
//	setfcap cap_net_raw /usr/local/bin/capture
//
// It writes the security.capability attribute (VFS_CAP_REVISION_2) with
// the named capabilities permitted and effective, so a non-root user that
// runs the file gets them (within the container's bounding set) and
// nothing else. Names are Linux capability names, any case, cap_ prefix
// optional, comma-separated.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// caps are the capabilities setfcap knows by name (linux/capability.h).
var caps = map[string]uint{
	"net_bind_service": 10,
	"net_admin":        12,
	"net_raw":          13,
	"ipc_lock":         14,
}

const (
	vfsCapRevision2     = 0x02000000
	vfsCapFlagEffective = 0x000001
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: setfcap CAP[,CAP...] FILE")
		os.Exit(2)
	}
	var permitted uint64
	for _, name := range strings.Split(os.Args[1], ",") {
		n := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(name)), "cap_")
		bit, ok := caps[n]
		if !ok {
			fmt.Fprintf(os.Stderr, "setfcap: unknown capability %q\n", name)
			os.Exit(2)
		}
		permitted |= 1 << bit
	}
	// struct vfs_cap_data: magic_etc, then {permitted, inheritable} for
	// bits 0-31 and 32-63.
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagEffective)
	binary.LittleEndian.PutUint32(b[4:], uint32(permitted))
	binary.LittleEndian.PutUint32(b[12:], uint32(permitted>>32))
	if err := unix.Setxattr(os.Args[2], "security.capability", b, 0); err != nil {
		fmt.Fprintf(os.Stderr, "setfcap %s: %v\n", os.Args[2], err)
		os.Exit(1)
	}
}
