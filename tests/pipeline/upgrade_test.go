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

// lastFixedSplit is the last commit whose consumer split every second of
// layout v2 into 32 lists, counted in n: keys.
const lastFixedSplit = "8f1ceee"

// buildOldConsumer builds the consumer of commit rev from this
// repository's history into the test's binary directory.
func buildOldConsumer(t *testing.T, rev string) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the upgrade test builds the consumer of %s from git history: %v", rev, err)
	}
	root := strings.TrimSpace(string(top))
	src := t.TempDir()
	archive := exec.Command("git", "-C", root, "archive", "--format=tar", rev)
	var tarball, stderr bytes.Buffer
	archive.Stdout, archive.Stderr = &tarball, &stderr
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s (a clone with history is needed): %v\n%s", rev, err, stderr.String())
	}
	untar := exec.Command("tar", "-x", "-C", src)
	untar.Stdin = &tarball
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("untar %s: %v\n%s", rev, err, out)
	}
	name := "consumer-" + rev
	bin := filepath.Join(binDir, name)
	build := exec.Command("go", "build", "-o", bin, "github.com/connpipe/connpipe/services/consumer")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the consumer of %s: %v\n%s", rev, err, out)
	}
	return name
}

// A rolling upgrade, in the README's order (admin first, then consumers,
// captures last): a consumer from before layout v2 and an upgraded one
// consume one queue side by side while captures still publish version 1
// batches, then the old consumer stops. Admin returns every record of the
// window exactly once, from both layouts.
func TestRollingUpgradeReadsBothLayouts(t *testing.T) { rollingUpgrade(t, lastV1) }

// The same from the release that split every second into 32 lists: in a
// second that both consumers wrote, split otherwise, admin reads every
// record once, by source too.
func TestRollingUpgradeFromFixedSplit(t *testing.T) { rollingUpgrade(t, lastFixedSplit) }

func rollingUpgrade(t *testing.T, rev string) {
	old := buildOldConsumer(t, rev)
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
	t.Logf("old consumer (%s) stored %.0f records, new one %.0f", rev, oldN, storedBy(newC.addr))

	got := readRecords(t, s, "since=5m&limit=100000")
	seen := map[string]int{}
	for _, r := range got {
		seen[r.String()]++
	}
	for _, r := range want {
		if n := seen[r.String()]; n != 1 {
			t.Fatalf("record %s read back %d times, want once", r, n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d records, published %d", len(got), len(want))
	}
	// A source question finds its record whichever consumer stored it.
	for _, r := range []record.Record{want[0], want[len(want)/2], want[len(want)-1]} {
		bySrc := readRecords(t, s, "since=5m&src="+r.Src.String())
		if len(bySrc) != 1 || bySrc[0].String() != r.String() {
			t.Fatalf("src %s: read %v, want %s", r.Src, bySrc, r)
		}
	}
	out, err := s.cli("records", "--since", "5m", "--count")
	if err != nil || !strings.Contains(out, fmt.Sprintf("total\t%d", len(want))) {
		t.Fatalf("admin records --count: %v\n%s", err, out)
	}
}

// readRecords asks admin's API for records with query q.
func readRecords(t *testing.T, s *system, q string) []record.Record {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.adminAddr+"/api/v1/records?"+q, nil)
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
		t.Fatalf("records?%s: %v", q, err)
	}
	out := make([]record.Record, len(res.Records))
	for i := range res.Records {
		if out[i], err = res.Records[i].Record(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
