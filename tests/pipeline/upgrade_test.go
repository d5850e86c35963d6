package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// lastV1 is the last commit whose consumer wrote store layout v1 and
// decoded record batches of version 1 only.
const lastV1 = "799df35"

// buildOldConsumer builds the consumer of commit lastV1 from this
// repository's history into the test's binary directory.
func buildOldConsumer(t *testing.T) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the upgrade test builds the consumer of %s from git history: %v", lastV1, err)
	}
	root := strings.TrimSpace(string(top))
	src := t.TempDir()
	archive := exec.Command("git", "-C", root, "archive", "--format=tar", lastV1)
	var tarball, stderr bytes.Buffer
	archive.Stdout, archive.Stderr = &tarball, &stderr
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s (a clone with history is needed): %v\n%s", lastV1, err, stderr.String())
	}
	untar := exec.Command("tar", "-x", "-C", src)
	untar.Stdin = &tarball
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("untar %s: %v\n%s", lastV1, err, out)
	}
	bin := filepath.Join(binDir, "consumer-v1")
	build := exec.Command("go", "build", "-o", bin, "github.com/connpipe/connpipe/services/consumer")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the consumer of %s: %v\n%s", lastV1, err, out)
	}
	return "consumer-v1"
}

// A rolling upgrade, in the README's order (admin first, then consumers,
// captures last): a consumer from before layout v2 and an upgraded one
// consume one queue side by side while captures still publish version 1
// batches, then the old consumer stops. Admin returns every record of the
// window exactly once, from both layouts.
func TestRollingUpgradeReadsBothLayouts(t *testing.T) {
	old := buildOldConsumer(t)
	s := newSystem(t, nil)
	s.startAdmin()
	oldAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	oldC := start(t, "consumer-v1", old, s.with(map[string]string{"METRICS_ADDR": oldAddr, "CONSUMER_ID": "consumer-v1"}))
	waitFor(t, 20*time.Second, "old consumer healthy", func() (bool, string) { return healthy(oldAddr), "healthz not ok" })
	newC := s.startConsumer("consumer-v2")

	ch := testenv.Channel(t, s.amqp)
	var want []record.Record
	publish := func(round, batches int) {
		for b := range batches {
			recs := make([]record.Record, 100)
			now := time.Now().UnixNano()
			for i := range recs {
				recs[i] = record.Record{TS: now + int64(i), Src: netip.AddrFrom4([4]byte{10, 80, byte(round*16 + b), byte(i)}),
					Dst: netip.MustParseAddr("10.80.255.1"), SrcPort: uint16(1000 + i), DstPort: 7000, Flags: record.FlagSYN, IPLen: 60}
			}
			want = append(want, recs...)
			testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{
				ContentType: record.ContentTypeBinaryV1, Headers: amqp.Table{record.VersionHeader: int32(1)},
				DeliveryMode: amqp.Persistent, Body: record.AppendBatchV1(nil, now, recs)})
		}
	}
	storedBy := func(addr string) float64 {
		m, err := metrics(addr)
		if err != nil {
			return -1
		}
		return m[`connpipe_consumer_records_stored_total{backend="redis-a"}`] + m[`connpipe_consumer_records_stored_total{backend="redis-b"}`]
	}
	// Side by side: both consumers take a share of the queue.
	for round := 0; round < 10 && (storedBy(oldAddr) <= 0 || storedBy(newC.addr) <= 0); round++ {
		publish(round, 8)
		waitFor(t, 20*time.Second, "records stored", func() (bool, string) {
			n := storedBy(oldAddr) + storedBy(newC.addr)
			return n == float64(len(want)), fmt.Sprintf("%.0f of %d", n, len(want))
		})
	}
	oldN, newN := storedBy(oldAddr), storedBy(newC.addr)
	if oldN <= 0 || newN <= 0 {
		t.Fatalf("the old consumer stored %v and the new %v: want both to have stored", oldN, newN)
	}
	// The old consumer stops; the new one takes everything.
	oldC.stop(10 * time.Second)
	publish(10, 4)
	waitFor(t, 20*time.Second, "the rest stored by the new consumer", func() (bool, string) {
		n := oldN + storedBy(newC.addr)
		return n == float64(len(want)), fmt.Sprintf("%.0f of %d", n, len(want))
	})
	t.Logf("old consumer stored %.0f records (layout v1), new one %.0f (layout v2)", oldN, storedBy(newC.addr))

	req, _ := http.NewRequest(http.MethodGet, "http://"+s.adminAddr+"/api/v1/records?since=5m&limit=100000", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Records []record.JSON `json:"records"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := range res.Records {
		r, err := res.Records[i].Record()
		if err != nil {
			t.Fatal(err)
		}
		seen[r.String()]++
	}
	for _, r := range want {
		if n := seen[r.String()]; n != 1 {
			t.Fatalf("record %s read back %d times, want once", r, n)
		}
	}
	if len(res.Records) != len(want) {
		t.Fatalf("read back %d records, published %d", len(res.Records), len(want))
	}
	out, err := s.cli("records", "--since", "5m", "--count")
	if err != nil || !strings.Contains(out, fmt.Sprintf("total\t%d", len(want))) {
		t.Fatalf("admin records --count: %v\n%s", err, out)
	}
}
