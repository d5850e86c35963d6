package app

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/connpipe/connpipe/services/capture/internal/decode"
	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/prometheus/client_golang/prometheus"
)

// tunnels is mirror mode's configuration: DECAP and the settings beside it.
func (c *Config) tunnels() (decode.Tunnels, error) {
	t, err := decode.ParseTunnels(c.Decap)
	if err != nil {
		return t, fmt.Errorf("DECAP=%q: %w", c.Decap, err)
	}
	if c.DecapVXLANPort == 0 || c.DecapGenevePort == 0 {
		return t, fmt.Errorf("DECAP_VXLAN_PORT=%d, DECAP_GENEVE_PORT=%d: want ports 1..65535", c.DecapVXLANPort, c.DecapGenevePort)
	}
	t.VXLANPort, t.GenevePort = c.DecapVXLANPort, c.DecapGenevePort
	if t.VNIs, err = decode.ParseIDs(c.DecapVNIs, decode.MaxVNI); err != nil {
		return t, fmt.Errorf("DECAP_VNIS=%q: %w", c.DecapVNIs, err)
	}
	ids, err := decode.ParseIDs(c.DecapSessions, decode.MaxSessionID)
	if err != nil {
		return t, fmt.Errorf("DECAP_ERSPAN_SESSIONS=%q: %w", c.DecapSessions, err)
	}
	for _, id := range ids {
		t.Sessions = append(t.Sessions, uint16(id))
	}
	return t, nil
}

// What became of a tunnel frame: the labels of tunnel_frames_total.
const (
	tunRecorded = iota
	tunFilteredInner
	tunUnknownID
	tunMalformed
	numTunOutcomes
)

var tunOutcomeNames = [numTunOutcomes]string{"recorded", "filtered_inner", "unknown_id", "malformed"}

// numTunnels bounds decode.Tunnel values.
const numTunnels = int(decode.TunnelERSPAN) + 1

// tunOutcome is the outcome of a tunnel frame decoded with status st whose
// inner packet matched the filter or not.
func tunOutcome(st decode.Status, matched bool) int {
	switch {
	case st == decode.StatusOK && matched:
		return tunRecorded
	case st == decode.StatusTunnelUnknownID:
		return tunUnknownID
	case st.Malformed():
		return tunMalformed
	}
	return tunFilteredInner
}

// tunnelCounters is tunnel_frames_total by tunnel and outcome.
type tunnelCounters [numTunnels][numTunOutcomes]prometheus.Counter

func newTunnelCounters(reg prometheus.Registerer) *tunnelCounters {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connpipe_capture_tunnel_frames_total",
		Help: "Tunnel frames opened in mirror mode (DECAP), by tunnel and outcome: recorded, filtered_inner (the packet inside is not TCP to the filter), unknown_id (VNI or ERSPAN session not accepted), malformed. Each is also in records/filtered/decode_errors."},
		[]string{"tunnel", "outcome"})
	var c tunnelCounters
	for t := decode.TunnelVXLAN; int(t) < numTunnels; t++ {
		for o := range numTunOutcomes {
			c[t][o] = vec.WithLabelValues(t.String(), tunOutcomeNames[o])
		}
	}
	reg.MustRegister(vec)
	return &c
}

// tunnelTally counts one ring block's tunnel frames.
type tunnelTally [numTunnels][numTunOutcomes]int

func (t *tunnelTally) flush(c *tunnelCounters) {
	for tun := range t {
		for o, n := range t[tun] {
			if n > 0 {
				c[tun][o].Add(float64(n))
			}
		}
	}
	*t = tunnelTally{}
}

// kernelTunnels is the kernel program of mirror mode on iface: the
// configured tunnels, to the addresses of iface (of every interface for
// any). An interface without an address admits tunnels to any address.
func kernelTunnels(iface string, t decode.Tunnels) (*filter.Tunnels, error) {
	var (
		addrs []net.Addr
		err   error
	)
	if iface == "any" {
		addrs, err = net.InterfaceAddrs()
	} else {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(iface); err == nil {
			addrs, err = ifi.Addrs()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("addresses for mirror mode: %w", err)
	}
	k := &filter.Tunnels{GRE: t.GRE || t.ERSPAN}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			k.Hosts = append(k.Hosts, p.Addr().Unmap())
		}
	}
	if t.VXLAN {
		k.UDPPorts = append(k.UDPPorts, t.VXLANPort)
	}
	if t.Geneve && (!t.VXLAN || t.GenevePort != t.VXLANPort) {
		k.UDPPorts = append(k.UDPPorts, t.GenevePort)
	}
	return k, nil
}
