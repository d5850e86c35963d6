package capturestats

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    Stats
		wantErr string
	}{
		{
			name: "every metric",
			text: `# HELP connpipe_capture_packets_total Packets seen.
# TYPE connpipe_capture_packets_total counter
connpipe_capture_packets_total 1200
# TYPE connpipe_capture_records_published_total counter
connpipe_capture_records_published_total 1100
# TYPE connpipe_capture_records_confirmed_total counter
connpipe_capture_records_confirmed_total 1024
# TYPE connpipe_capture_kernel_drops_total counter
connpipe_capture_kernel_drops_total 3
# TYPE connpipe_capture_decode_errors_total counter
connpipe_capture_decode_errors_total{reason="truncated"} 5
connpipe_capture_decode_errors_total{reason="not_tcp"} 2
# TYPE go_goroutines gauge
go_goroutines 12
`,
			want: Stats{Packets: 1200, Published: 1100, Confirmed: 1024, KernelDrops: 3, DecodeErrors: 7,
				ByReason: map[string]float64{"truncated": 5, "not_tcp": 2}},
		},
		{
			name: "untyped and missing",
			text: "connpipe_capture_packets_total 5\n",
			want: Stats{Packets: 5, ByReason: map[string]float64{},
				Missing: []string{MetricPublished, MetricConfirmed, MetricKernelDrops, MetricDecodeErrors}},
		},
		{name: "not prometheus", text: "<html>hello</html>\n", wantErr: "parse capture metrics"},
		{name: "bad value", text: "connpipe_capture_packets_total many\n", wantErr: "parse capture metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.text))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// The scraper reads what a real Prometheus handler serves, and scrapes at
// most once per interval.
func TestScrapeRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	packets := prometheus.NewCounter(prometheus.CounterOpts{Name: MetricPackets, Help: "p"})
	decode := prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricDecodeErrors, Help: "d"}, []string{"reason"})
	reg.MustRegister(packets, decode)
	packets.Add(42)
	decode.WithLabelValues("truncated").Add(2)
	scrapes := 0
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scrapes++
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	now := time.Unix(1_800_000_000, 0)
	s := &Scraper{URL: srv.URL + "/metrics", Now: func() time.Time { return now }}
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 42 || st.DecodeErrors != 2 || st.ByReason["truncated"] != 2 {
		t.Fatalf("stats %+v", st)
	}
	packets.Add(8)
	now = now.Add(500 * time.Millisecond)
	if st, _ = s.Stats(context.Background()); st.Packets != 42 || scrapes != 1 {
		t.Fatalf("within the interval: packets %v after %d scrapes, want the cached 42 after 1", st.Packets, scrapes)
	}
	now = now.Add(time.Second)
	if st, _ = s.Stats(context.Background()); st.Packets != 50 || scrapes != 2 {
		t.Fatalf("after the interval: packets %v after %d scrapes, want 50 after 2", st.Packets, scrapes)
	}
}

func TestScrapeErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	for _, tt := range []struct{ url, want string }{
		{srv.URL + "/nothing", "404"},
		{"http://127.0.0.1:1/metrics", "scrape capture"},
		{"::not a url", "CAPTURE_METRICS_URL"},
	} {
		_, err := (&Scraper{URL: tt.url, Timeout: time.Second}).Stats(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.url, err, tt.want)
		}
	}
}
