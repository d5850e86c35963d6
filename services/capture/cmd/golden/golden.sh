#!/usr/bin/env bash
# Regenerates testdata/golden/NAME.tsv from the sample captures with tshark,
# independently of the capture decoder. Run once (or when a capture is added):
#
#   services/capture/cmd/golden/golden.sh [PCAP_DIR [OUT_DIR]]
#
# PCAP_DIR defaults to $CONNPIPE_PCAPS, else capture's testdata/pcaps;
# OUT_DIR to testdata/golden. The crafted captures have their own (from
# services/capture):
#
#   cmd/golden/golden.sh testdata/crafted testdata/crafted/golden
#
# and the tunnels of mirror mode theirs, with GOLDEN_INNER=1: tshark opens
# VXLAN, Geneve, GRE and ERSPAN, and a line is the TCP packet of the last IP
# layer, the one inside the tunnel:
#
#   GOLDEN_INNER=1 cmd/golden/golden.sh testdata/crafted/mirror testdata/crafted/mirror/golden
#
# Each output line is one TCP packet, in file order:
#
#   ts_ns src_ip dst_ip src_port dst_port tcp_flags ip_len strict
#
# the same columns as the NAME.truth.tsv files next to the captures. Every
# protocol above TCP is switched off and IP reassembly is off; a frame counts
# only when its first IP layer (IPv4 or IPv6, after the link layer and VLAN
# tags) carries TCP directly (IPv6 extension headers may sit between), so TCP
# inside tunnels or ICMP errors is left out. strict is 0 for a frame cut by the
# snapshot length or one without a whole TCP header. (tshark 4.0 still runs some
# dissectors above TCP, such as HTTP on 8080, despite --disable-protocol ALL;
# their findings do not touch these columns.)
set -euo pipefail

testdata=$(cd "$(dirname "$0")/../../testdata" && pwd)
dir=${1:-${CONNPIPE_PCAPS:-$testdata/pcaps}}
out=${2:-$testdata/golden}
mkdir -p "$out"

protos=frame,eth,ethertype,vlan,ip,ipv6,tcp,sll,null,loop,raw,rawip,rawip4,rawip6
protos+=,ipv6.hopopts,ipv6.routing,ipv6.fraghdr,ipv6.dstopts,ah
# Link layers beyond Ethernet, VLAN tags and the cooked/loopback/raw headers.
protos+=,mpls,pppoes,ppp,llc,nflog,ieee8021ah,ipoib,arcnet,fddi
inner=${GOLDEN_INNER:-0}
if [ "$inner" = 1 ]; then
	protos+=,udp,vxlan,geneve,gre,erspan
fi

shopt -s nullglob
for f in "$dir"/*.pcap "$dir"/*.pcapng; do
	name=$(basename "$f")
	# tshark reports a capture cut mid-record on stderr and exits non-zero
	# after printing the whole packets; keep those.
	{ tshark -r "$f" -n \
		--enable-protocol "$protos" --disable-protocol ALL \
		-o ip.defragment:FALSE -o ipv6.defragment:FALSE \
		-o tcp.desegment_tcp_streams:FALSE -o tcp.analyze_sequence_numbers:FALSE \
		-Y tcp -T fields -E separator=/t -E occurrence=a -E aggregator=/s \
		-e frame.protocols -e frame.time_epoch -e frame.cap_len -e frame.len \
		-e ip.src -e ip.dst -e ipv6.src -e ipv6.dst \
		-e tcp.srcport -e tcp.dstport -e tcp.flags -e tcp.hdr_len \
		-e ip.len -e ipv6.plen 2>/dev/null || true; } |
	awk -F'\t' -v inner="$inner" '
	function first(s,  a) { split(s, a, " "); return inner ? a[length(a)] : a[1] }
	function hex(s,  v, i) {
		v = 0; s = tolower(s); sub(/^0x/, "", s)
		for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
		return v
	}
	{
		n = split($1, p, ":")
		ipi = 0
		for (i = 1; i <= n; i++) if (p[i] == "ip" || p[i] == "ipv6") { ipi = i; if (!inner) break }
		if (ipi == 0) next
		j = ipi + 1
		if (p[ipi] == "ipv6") while (j <= n && (p[j] ~ /^ipv6\./ || p[j] == "ah")) j++
		if (j > n || p[j] != "tcp") next       # tunnel, ICMP quote or a later fragment
		# tshark prints the seconds and the nanoseconds of the record as
		# they are (secs.nsecs), without carrying a fraction of a second
		# or more into the seconds; a negative fraction (a pcap fraction
		# that overflowed the 32-bit nanoseconds of tshark) prints as
		# -secs.|nsecs|. Carry it here: ts = secs*1e9 + nsecs.
		neg = sub(/^-/, "", $2)
		split($2, t, ".")
		if (length(t[2]) == 9 && !neg) {
			ts = t[1] t[2]
		} else {
			ns = t[2] + 0; q = int(ns / 1e9); r = ns - q * 1e9; s = t[1] + 0
			if (!neg) { s += q }
			else if (r == 0) { s -= q }
			else { s -= q + 1; r = 1e9 - r }
			ts = sprintf("%.0f%09d", s, r)
		}
		sub(/^0+/, "", ts)
		if (p[ipi] == "ip") { src = first($5); dst = first($6); iplen = first($13) }
		else { src = first($7); dst = first($8); iplen = first($14) + 40 }
		flags = sprintf("0x%04x", hex(first($11)) % 512)  # the 9 flag bits
		strict = ($3 == $4 && first($12) + 0 >= 20) ? 1 : 0
		printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", ts, src, dst, first($9), first($10), flags, iplen, strict
	}' >"$out/$name.tsv"
	echo "$name: $(wc -l <"$out/$name.tsv") TCP packets" >&2
done
