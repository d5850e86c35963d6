package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/redis/go-redis/v9"
)

// pcapDir is where the sample capture the replay is made from lives: this
// package's testdata (a copy of services/capture/testdata/pcaps/
// eth-ipv4-http-get.pcap), or CONNPIPE_PCAPS.
func pcapDir(tb testing.TB) string {
	if d := os.Getenv("CONNPIPE_PCAPS"); d != "" {
		return d
	}
	return "testdata"
}

// bigCapture writes n Ethernet/IPv4/TCP packets made from the real HTTP
// capture, each with a different source address (10.x.y.z) and a fresh
// timestamp, so the replay has the shape of many clients.
func bigCapture(tb testing.TB, n int) string {
	tb.Helper()
	f, err := os.Open(filepath.Join(pcapDir(tb), "eth-ipv4-http-get.pcap"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var frames [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		frames = append(frames, append([]byte(nil), data...))
	}
	path := filepath.Join(tb.TempDir(), "big.pcap")
	out, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	w := pcapgo.NewWriter(out)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		tb.Fatal(err)
	}
	base := time.Now()
	for i := range n {
		frame := append([]byte(nil), frames[i%len(frames)]...)
		frame[26], frame[27], frame[28], frame[29] = 10, byte(i>>16), byte(i>>8), byte(i)
		ci := capInfo(base.Add(time.Duration(i)*time.Microsecond), len(frame))
		if err := w.WritePacket(ci, frame); err != nil {
			tb.Fatal(err)
		}
	}
	return path
}

// BenchmarkPipelineReplay replays a large capture through capture →
// RabbitMQ → two consumers → two Redis instances as fast as it goes and
// reports end-to-end records/s, capture's own read-and-decode rate, and the
// Redis ceiling for the same write pattern measured with redis-benchmark.
// Each round runs the consumers writing store layout v1 and then layout
// v2 (STORE_LAYOUT), so the two are compared in the same run, alternating;
// CONNPIPE_BENCH_ROUNDS rounds (default 2), each layout's mean reported.
func BenchmarkPipelineReplay(b *testing.B) {
	n, rounds := replaySize()
	path := bigCapture(b, n)
	for b.Loop() {
		// Capture alone: read, decode, print to /dev/null.
		t0 := time.Now()
		cmd := exec.Command(filepath.Join(binDir, "capture"), "-r", path)
		cmd.Stdout = io.Discard
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("capture -r: %v\n%s", err, stderr.String())
		}
		decode := float64(n) / time.Since(t0).Seconds()

		sum := map[string]float64{} // records/s by layout, summed over rounds
		var redisAddr string
		for r := range rounds {
			for _, layout := range layoutOrder(r) {
				rate, addr := replay(b, path, n, map[string]string{"STORE_LAYOUT": layout})
				b.Logf("round %d, layout v%s: %.0f records/s", r+1, layout, rate)
				sum[layout] += rate
				redisAddr = addr
			}
		}
		v1, v2 := sum["1"]/float64(rounds), sum["2"]/float64(rounds)
		ceiling := redisCeiling(b, redisAddr)
		b.ReportMetric(v2, "e2e-records/s")
		b.ReportMetric(v1, "e2e-v1-records/s")
		b.ReportMetric(v2/v1, "v2/v1")
		b.ReportMetric(decode, "capture-decode-records/s")
		b.ReportMetric(ceiling, "redis-ceiling-records/s")
		b.ReportMetric(v2/ceiling, "e2e/ceiling")
	}
}

// replaySize is the records of a replay (CONNPIPE_BENCH_RECORDS, default
// 1,000,000) and the rounds to run (CONNPIPE_BENCH_ROUNDS, default 2).
func replaySize() (n, rounds int) {
	n, rounds = 1_000_000, 2
	if v, err := strconv.Atoi(os.Getenv("CONNPIPE_BENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("CONNPIPE_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	return n, rounds
}

// replay runs the pipeline once with the consumers' settings env (store
// layout, backends) and returns its end-to-end records/s and a Redis
// address it used.
func replay(b *testing.B, path string, n int, env map[string]string) (float64, string) {
	env["RETENTION"] = "2m"
	s := newSystem(b, env)
	s.startConsumer("consumer-1")
	s.startConsumer("consumer-2")
	redis0 := redisCPU(b, s.redis)
	t1 := time.Now()
	s.capAddr = fmt.Sprintf("127.0.0.1:%d", freePort(b))
	capture := start(b, "capture", "capture", s.with(map[string]string{"PCAP_FILES": path, "METRICS_ADDR": s.capAddr}))
	waitFor(b, 5*time.Minute, "all records stored", func() (bool, string) {
		var total float64
		for _, c := range s.consumers {
			a, bb := c.split(b)
			total += a + bb
		}
		return total >= float64(n), fmt.Sprintf("%.0f stored", total)
	})
	rate := float64(n) / time.Since(t1).Seconds()
	if d := s.duplicatesSkipped(); d != 0 {
		b.Fatalf("%v: %.0f records skipped as duplicates in a replay that sends each once", env, d)
	}
	redisUsed := redisCPU(b, s.redis) - redis0
	capture.stop(10 * time.Second)
	var consumers time.Duration
	for _, c := range s.consumers {
		c.stop(10 * time.Second)
		consumers += c.cmd.ProcessState.UserTime() + c.cmd.ProcessState.SystemTime()
	}
	perRecord := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n) }
	b.Logf("%v: CPU a record: consumers %.0f ns, capture %.0f ns, redis %.0f ns", env,
		perRecord(consumers), perRecord(capture.cmd.ProcessState.UserTime()+capture.cmd.ProcessState.SystemTime()), perRecord(redisUsed))
	for _, addr := range s.redis {
		dropKeys(b, addr, s.prefix)
	}
	return rate, s.redis[1]
}

// dropKeys unlinks every key under prefix on the Redis at addr, so rounds
// do not fill the test servers.
func dropKeys(b *testing.B, addr, prefix string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 10000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 5000 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
}

// redisCeiling measures with redis-benchmark how many records/s one Redis
// takes in the consumer's write pattern of layout v2: RPUSH of a 512-entry
// chunk (the capture batch size, about 13 bytes an IPv4 entry) with
// PEXPIREAT and a counter INCRBY, in one script call, 4 connections,
// pipelined by 8.
func redisCeiling(b *testing.B, addr string) float64 {
	host, port, _ := strings.Cut(addr, ":")
	blob := strings.Repeat("x", 512*13)
	script := "redis.call('RPUSH',KEYS[1],ARGV[1]) redis.call('PEXPIREAT',KEYS[1],ARGV[2]) local n=KEYS[1]..':n' redis.call('INCRBY',n,512) redis.call('PEXPIREAT',n,ARGV[2]) return 1"
	deadline := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-n", "10000", "-r", "1000", "-c", "4", "-P", "8", "-q",
		"EVAL", script, "1", "cpbench:r:__rand_int__", blob, deadline).CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`([0-9.]+) requests per second`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("redis-benchmark said: %s", out)
	}
	ops, _ := strconv.ParseFloat(string(m[1]), 64)
	return ops * 512
}

func capInfo(ts time.Time, n int) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: ts, CaptureLength: n, Length: n}
}

// layoutOrder is the order of the layouts in round r: v1 first in even
// rounds, v2 first in odd ones, so neither always runs on a broker still
// busy with the run before. CONNPIPE_BENCH_LAYOUT=2 runs one layout only
// (for profiling).
func layoutOrder(r int) []string {
	if only := os.Getenv("CONNPIPE_BENCH_LAYOUT"); only != "" {
		return []string{only}
	}
	if r%2 == 1 {
		return []string{"2", "1"}
	}
	return []string{"1", "2"}
}

// redisCPU is the CPU time the Redis servers at addrs have used (INFO cpu).
func redisCPU(b *testing.B, addrs []string) time.Duration {
	var total time.Duration
	for _, addr := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		info, err := rdb.Info(context.Background(), "cpu").Result()
		rdb.Close()
		if err != nil {
			b.Fatalf("info cpu of %s: %v", addr, err)
		}
		for _, line := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				sec, _ := strconv.ParseFloat(v, 64)
				total += time.Duration(sec * float64(time.Second))
			}
		}
	}
	return total
}
