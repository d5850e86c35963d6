package app

import (
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// mirrorDir holds the tunnel captures (cmd/gencrafted) and, in golden/, the TCP
// packets tshark finds inside the tunnels (GOLDEN_INNER=1 golden.sh).
const mirrorDir = craftedDir + "/mirror"

// Facts of tunnels.pcap, as cmd/gencrafted builds it: the watched address, the
// one frame that is not a tunnel, the tunnel frames cut or inconsistent,
// and the capture times of the frames to the watched address in VNI 200,
// in ERSPAN type I (no session id) and in ERSPAN session 5.
const (
	mirrorListen    = "10.9.0.80:80"
	mirrorPlainTS   = "1700000017017007000"
	mirrorMalformed = 3
)

var mirrorOtherIDs = []string{"1700000003003007000", "1700000012012007000", "1700000013013007000"}

// mirrorWant is tshark's inner TCP packets of tunnels.pcap sent to the
// watched address, but those whose capture time is in skip.
func mirrorWant(t *testing.T, skip ...string) []goldenLine {
	t.Helper()
	var want []goldenLine
	for _, w := range readGoldenIn(t, filepath.Join(mirrorDir, "golden"), "tunnels.pcap") {
		f := strings.Split(w.text, "\t")
		if f[2]+":"+f[4] != mirrorListen || slices.Contains(skip, f[0]) {
			continue
		}
		want = append(want, w)
	}
	if len(want) < 5 {
		t.Fatalf("only %d packets to %s in the golden file: the test proves little", len(want), mirrorListen)
	}
	return want
}

// tunnelCount is tunnel_frames_total summed over tunnels for one outcome.
func tunnelCount(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	return counterWhere(t, reg, "connpipe_capture_tunnel_frames_total", func(m *dto.Metric) bool {
		return slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == "outcome" && l.GetValue() == outcome
		})
	})
}

// TestMirrorGolden replays the tunnel captures in mirror mode: exactly the
// TCP packets inside VXLAN, Geneve, GRE and ERSPAN I/II/III sent to the
// listen address are recorded, with the inner addresses, ports, flags and
// length, and every frame is accounted for.
func TestMirrorGolden(t *testing.T) {
	path := filepath.Join(mirrorDir, "tunnels.pcap")
	t.Setenv("DECAP", "vxlan,geneve,gre,erspan")
	got, err, reg := replay(t, []string{path}, "", mirrorListen)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkGolden(t, "tunnels.pcap", got, mirrorWant(t))
	checkAccounted(t, reg, len(got))
	if n := tunnelCount(t, reg, "recorded"); n != float64(len(got)-1) {
		t.Errorf("tunnel frames recorded = %v, want %d (all records but the plain frame)", n, len(got)-1)
	}
	if n := tunnelCount(t, reg, "malformed"); n != mirrorMalformed {
		t.Errorf("tunnel frames malformed = %v, want %d", n, mirrorMalformed)
	}
	if n := tunnelCount(t, reg, "filtered_inner"); n == 0 {
		t.Error("no tunnel frame filtered by its inner address, though the capture holds some")
	}
}

// TestMirrorIDs accepts only some VNIs and ERSPAN sessions: the frames of
// the others are counted as unknown_id and not recorded.
func TestMirrorIDs(t *testing.T) {
	path := filepath.Join(mirrorDir, "tunnels.pcap")
	t.Setenv("DECAP", "vxlan,geneve,gre,erspan")
	t.Setenv("DECAP_VNIS", "100,300")
	t.Setenv("DECAP_ERSPAN_SESSIONS", "7")
	got, err, reg := replay(t, []string{path}, "", mirrorListen)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkGolden(t, "tunnels.pcap", got, mirrorWant(t, mirrorOtherIDs...))
	checkAccounted(t, reg, len(got))
	// VNI 200, ERSPAN type I, sessions 5 and 6.
	if n := tunnelCount(t, reg, "unknown_id"); n != 4 {
		t.Errorf("tunnel frames of unknown ids = %v, want 4", n)
	}
}

// TestMirrorOff replays the tunnel captures without DECAP: only the frame
// that is not a tunnel gives a record.
func TestMirrorOff(t *testing.T) {
	got, err, reg := replay(t, []string{filepath.Join(mirrorDir, "tunnels.pcap")}, "", mirrorListen)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], mirrorPlainTS+"\t") {
		t.Fatalf("records without DECAP: %q, want the plain frame only", got)
	}
	checkAccounted(t, reg, len(got))
	if n := tunnelCount(t, reg, "recorded") + tunnelCount(t, reg, "filtered_inner"); n != 0 {
		t.Errorf("tunnel frames counted without DECAP: %v", n)
	}
}

func TestMirrorConfig(t *testing.T) {
	path := filepath.Join(mirrorDir, "tunnels.pcap")
	c, err := LoadConfig([]string{"-r", path, "-decap", "vxlan,erspan", "-listen", mirrorListen}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tun, err := c.tunnels()
	if err != nil || !tun.VXLAN || !tun.ERSPAN || tun.GRE || tun.Geneve {
		t.Fatalf("-decap vxlan,erspan: %+v, %v", tun, err)
	}
	for env, val := range map[string]string{"DECAP": "vxlan,ipip", "DECAP_VNIS": "16777216", "DECAP_ERSPAN_SESSIONS": "1024", "DECAP_VXLAN_PORT": "0"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, val)
			if _, err := LoadConfig([]string{"-r", path}, io.Discard); err == nil || !strings.Contains(err.Error(), env) {
				t.Errorf("%s=%s: error %v, want one naming %s", env, val, err, env)
			}
		})
	}
}
