package capturestats

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

type fakeResolver map[string][]string

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// serveMetrics serves a capture's metrics with the given packet count on
// ip:port (port 0: any) and returns the port.
func serveMetrics(t *testing.T, ip string, port, packets int) int {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", MetricPackets, MetricPackets, packets)
		fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", MetricConfirmed, MetricConfirmed, packets-1)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestSetScrapesEveryReplica(t *testing.T) {
	// Two replicas of one service: the same port on two addresses, as a
	// scaled compose service is.
	port := serveMetrics(t, "127.0.0.2", 0, 100)
	serveMetrics(t, "127.0.0.3", port, 250)
	other := serveMetrics(t, "127.0.0.1", 0, 7)

	urls, err := ParseURLs(fmt.Sprintf("http://scraper:s3cret@capture:%d/metrics, http://127.0.0.1:%d/metrics,http://gone:1/metrics", port, other))
	if err != nil {
		t.Fatal(err)
	}
	set := &Set{URLs: urls, Resolver: fakeResolver{"capture": {"127.0.0.3", "127.0.0.2"}}}
	ts := set.Stats(context.Background())
	if len(ts) != 4 {
		t.Fatalf("%d targets, want 4 (two replicas, one address, one unresolvable): %+v", len(ts), ts)
	}
	want := []struct {
		name, addr string
		packets    float64
		err        string
	}{
		{"127.0.0.1", "127.0.0.1", 7, ""},
		{"capture", "127.0.0.2", 100, ""},
		{"capture", "127.0.0.3", 250, ""},
		{"gone", "", 0, "resolve gone"},
	}
	for i, w := range want {
		got := ts[i]
		if got.Name != w.name || got.Addr != w.addr || got.Packets != w.packets || !strings.Contains(got.Error, w.err) || (w.err == "") != (got.Error == "") {
			t.Errorf("target %d = %+v, want %+v", i, got, w)
		}
		if strings.Contains(got.URL, "s3cret") {
			t.Errorf("target %d shows the password: %s", i, got.URL)
		}
	}
	sum := Sum(ts)
	if sum.Packets != 357 || sum.Confirmed != 354 {
		t.Errorf("sum %+v, want 357 packets and 354 confirmed", sum)
	}
}

func TestParseURLsNamesTheBadOneWithoutItsPassword(t *testing.T) {
	for _, in := range []string{"127.0.0.1:9100", "ftp://a/metrics", "http://ok:1/m,http://user:hunter2@/metrics"} {
		_, err := ParseURLs(in)
		if err == nil || !strings.Contains(err.Error(), "CAPTURE_METRICS_URL") {
			t.Errorf("ParseURLs(%q) = %v, want an error naming CAPTURE_METRICS_URL", in, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURLs(%q) error shows the password: %v", in, err)
		}
	}
	if urls, err := ParseURLs(""); err != nil || len(urls) != 0 {
		t.Errorf("ParseURLs(\"\") = %v, %v; want none", urls, err)
	}
}

func TestParseSpoolFlowControlAndReaders(t *testing.T) {
	text := `# TYPE connpipe_capture_packets_total counter
connpipe_capture_packets_total 10
# TYPE connpipe_capture_spool_records gauge
connpipe_capture_spool_records 1133
# TYPE connpipe_capture_spool_bytes gauge
connpipe_capture_spool_bytes 29013
# TYPE connpipe_capture_spool_max_bytes gauge
connpipe_capture_spool_max_bytes 1.073741824e+09
# TYPE connpipe_capture_spool_oldest_age_seconds gauge
connpipe_capture_spool_oldest_age_seconds 4.5
# TYPE connpipe_capture_spool_dropped_total counter
connpipe_capture_spool_dropped_total{reason="full"} 7
connpipe_capture_spool_dropped_total{reason="corrupt"} 1
# TYPE connpipe_capture_broker_blocked gauge
connpipe_capture_broker_blocked 1
# TYPE connpipe_capture_kernel_drops_total counter
connpipe_capture_kernel_drops_total{worker="0"} 3
connpipe_capture_kernel_drops_total{worker="1"} 5
# TYPE connpipe_capture_ring_freezes_total counter
connpipe_capture_ring_freezes_total{worker="0"} 1
connpipe_capture_ring_freezes_total{worker="1"} 2
`
	st, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if st.SpoolRecords != 1133 || st.SpoolBytes != 29013 || st.SpoolMaxBytes != 1<<30 || st.SpoolOldestSec != 4.5 ||
		st.SpoolDropped != 8 || st.BrokerBlocked != 1 || st.KernelDrops != 8 || st.RingFreezes != 3 ||
		st.DropsByWorker["0"] != 3 || st.DropsByWorker["1"] != 5 {
		t.Errorf("spool, flow control and readers read as %+v", st)
	}
	for _, m := range st.Missing {
		if strings.Contains(m, "spool") || strings.Contains(m, "blocked") {
			t.Errorf("optional metric %s listed as missing", m)
		}
	}
}
