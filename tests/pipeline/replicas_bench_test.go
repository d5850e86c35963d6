package pipeline

import (
	"fmt"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/testenv"
)

// BenchmarkPipelineReplayMinReplicas is BenchmarkPipelineReplay into one
// Sentinel backend (the primary, replica and sentinels that testenv.sh
// starts; a plain instance has no replica to confirm a write), replayed
// with REDIS_MIN_REPLICAS=0 and =1 in turn in
// each of CONNPIPE_BENCH_ROUNDS rounds: what acking only replicated
// records costs, measured in the same run.
func BenchmarkPipelineReplayMinReplicas(b *testing.B) {
	n, rounds := replaySize()
	sentinels, master := testenv.Sentinels(b)
	allow := append([]string{"127.0.0.1:6392", "127.0.0.1:6393"}, sentinels...)
	path := bigCapture(b, n)
	for b.Loop() {
		sum := map[string]float64{}
		for r := range rounds {
			order := []string{"0", "1"}
			if r%2 == 1 {
				order = []string{"1", "0"}
			}
			for _, mr := range order {
				prefix := testenv.Prefix(b)
				rate, _ := replay(b, path, n, map[string]string{
					"REDIS_PREFIX":       prefix,
					"STORE_LAYOUT":       "2",
					"BACKENDS":           fmt.Sprintf("redis-b=sentinel://%s/%s", strings.Join(sentinels, ","), master),
					"WEIGHTS":            "redis-b=1",
					"BACKEND_ALLOW":      strings.Join(allow, ","),
					"REDIS_MIN_REPLICAS": mr,
				})
				dropKeys(b, testenv.SentinelPrimary(b, sentinels[0], master), prefix)
				b.Logf("round %d, REDIS_MIN_REPLICAS=%s: %.0f records/s", r+1, mr, rate)
				sum[mr] += rate
			}
		}
		mr0, mr1 := sum["0"]/float64(rounds), sum["1"]/float64(rounds)
		b.ReportMetric(mr0, "e2e-min-replicas-0-records/s")
		b.ReportMetric(mr1, "e2e-min-replicas-1-records/s")
		b.ReportMetric(mr1/mr0, "min-replicas-1/0")
	}
}
