package testenv

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinels returns the addresses of the sentinels that testenv.sh
// started and the master name they watch, failing the test unless they
// name a primary that holds the marker. Only one test may fail the group
// over (SENTINEL FAILOVER); none may stop its servers.
func Sentinels(t testing.TB) (addrs []string, master string) {
	t.Helper()
	addrs = strings.Split(setting(t, "CONNPIPE_TEST_SENTINELS"), ",")
	master = setting(t, "CONNPIPE_TEST_SENTINEL_MASTER")
	primary := SentinelPrimary(t, addrs[0], master)
	if err := checkMarker(primary, setting(t, "CONNPIPE_TEST_MARKER")); err != nil {
		t.Fatalf("sentinel primary at %s: %v; %s", primary, err, hint)
	}
	return addrs, master
}

// SentinelPrimary asks the sentinel at addr for master's primary.
func SentinelPrimary(t testing.TB, addr, master string) string {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hp, err := sc.GetMasterAddrByName(ctx, master).Result()
	if err != nil || len(hp) != 2 {
		t.Fatalf("sentinel at %s: master %s: %v; %s", addr, master, err, hint)
	}
	return net.JoinHostPort(hp[0], hp[1])
}
