package app_test

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/app/apptest"
)

var refusedLarge = regexp.MustCompile(`connpipe_admin_heartbeats_total\{result="too_large"\} (\d+)`)

// TestHeartbeatFloodBounded: 1,000 heartbeats of 2 MiB, each with a new
// id and a map of over 100,000 entries, are refused and counted, and
// admin's heap (this process's, after GC) stays within 32 MB of idle
// throughout. Publishing waits for admin to count, so the flood never
// piles up in the shared test broker.
func TestHeartbeatFloodBounded(t *testing.T) {
	const n, size, bound = 1000, 2 << 20, 32 << 20
	e := apptest.Start(t, nil)
	refused := func() int {
		m := apptest.Call(t, http.MethodGet, "http://"+e.Server.MetricsAddr()+"/metrics", "", nil).Body
		v := refusedLarge.FindSubmatch(m)
		if v == nil {
			t.Fatalf("metrics lack the too_large heartbeat counter")
		}
		c, _ := strconv.Atoi(string(v[1]))
		return c
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	body := floodBody(size)
	idle, peak := heap(), uint64(0)
	for i := range n {
		copy(body[len(`{"consumer":"`):], fmt.Sprintf("flood-%06d", i))
		e.PublishHeartbeat(t, body)
		if i%50 == 49 {
			deadline := time.Now().Add(30 * time.Second)
			for refused() < i-10 {
				if time.Now().After(deadline) {
					t.Fatalf("admin refused %d of %d heartbeats within 30s", refused(), i+1)
				}
				time.Sleep(20 * time.Millisecond)
			}
			peak = max(peak, heap())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for refused() < n {
		if time.Now().After(deadline) {
			t.Fatalf("admin refused %d of %d heartbeats", refused(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	peak = max(peak, heap())
	t.Logf("heap idle %.1f MB, peak after GC %.1f MB over 1,000 heartbeats of 2 MiB", float64(idle)/1e6, float64(peak)/1e6)
	if peak > idle+bound {
		t.Errorf("heap grew from %d to %d bytes, over the bound of %d", idle, peak, bound)
	}
	var st struct {
		Consumers []any `json:"consumers"`
	}
	e.Read(t, "/api/v1/status").Decode(t, &st)
	if len(st.Consumers) != 0 {
		t.Errorf("status lists %d consumers from the flood", len(st.Consumers))
	}
}

// floodBody is a heartbeat JSON of size bytes: a consumer id of 12
// characters to overwrite, and a stored map with as many entries as fit.
func floodBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"consumer":"flood-000000","stored":{`)
	for i := 0; b.Len() < size-32; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"b%d":%d`, i, i)
	}
	b.WriteString(`}}`)
	for b.Len() < size {
		b.WriteByte(' ')
	}
	return b.Bytes()
}
