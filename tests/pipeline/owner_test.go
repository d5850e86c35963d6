package pipeline

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/routing"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// ownerKeys is how many payload keys TestOwnerIsWhereStored follows.
const ownerKeys = 10_000

// TestOwnerIsWhereStored: for every one of 10,000 payload keys, the owner
// admin names (records?key=…) is the instance where two consumers stored
// the key's records, after each of a series of routing changes in modes
// hash, hash + sticky and weighted + sticky: weight changes, a backend
// added and removed, and the stick home moved by adding a backend whose
// name sorts first and by removing the home. In sticky steps the stick
// entries must sit on the home the step expects, so a home change really
// happened.
func TestOwnerIsWhereStored(t *testing.T) {
	addrs := testenv.Redis(t, 3)
	s := newSystem(t, map[string]string{
		"BACKENDS": fmt.Sprintf("redis-b=%s,redis-c=%s", addrs[1], addrs[2]),
		"WEIGHTS":  "redis-b=50,redis-c=50",
		// redis-a is added later: allowed by its host:port.
		"BACKEND_ALLOW": strings.Join(addrs, ","),
	})
	ctx := testenv.Context(t, 5*time.Minute)
	byName := map[string]string{"redis-a": addrs[0], "redis-b": addrs[1], "redis-c": addrs[2]}
	s.startAdmin()
	s.startConsumer("c1")
	s.startConsumer("c2")

	ch := testenv.Channel(t, s.amqp)

	steps := []struct {
		name string
		args []string // admin CLI change before the step's records
		home string   // the stick home, when sticky
	}{
		{"hash, 50/50", []string{"mode", "set", "hash", "--key", "src"}, ""},
		{"hash, weights 20/80", []string{"weights", "set", "redis-b=20", "redis-c=80"}, ""},
		{"hash, redis-a added", []string{"backends", "add", "redis-a", addrs[0], "--weight", "50"}, ""},
		{"hash, redis-a removed", []string{"backends", "remove", "redis-a"}, ""},
		{"hash sticky", []string{"mode", "set", "--sticky"}, "redis-b"},
		{"hash sticky, weights 90/10", []string{"weights", "set", "redis-b=90", "redis-c=10"}, "redis-b"},
		{"hash sticky, redis-a added: the stick home moves", []string{"backends", "add", "redis-a", addrs[0], "--weight", "50"}, "redis-a"},
		{"hash sticky, owner redis-c removed", []string{"backends", "remove", "redis-c"}, "redis-a"},
		{"weighted sticky", []string{"mode", "set", "weighted"}, "redis-a"},
		{"weighted sticky, home redis-a removed", []string{"backends", "remove", "redis-a"}, "redis-b"},
	}
	layout := store.Layout{Prefix: s.prefix}
	moved := 0
	var last map[string]string
	for i, st := range steps {
		start := time.Now()
		if out, err := s.cli(append(st.args, "--wait", "10s")...); err != nil {
			t.Fatalf("%s: admin %v: %v\n%s", st.name, st.args, err, out)
		}
		tag := uint16(100 + i)
		publishKeyed(t, ch, tag)
		where := storedKeys(t, s, byName, tag)
		owners := adminOwners(t, s.adminAddr)
		wrong := 0
		for k := range ownerKeys {
			key := keyName(k)
			if owners[key] != where[key] {
				if wrong < 5 {
					t.Errorf("%s: key %s stored on %q, admin names %q", st.name, key, where[key], owners[key])
				}
				wrong++
			}
		}
		if wrong > 0 {
			t.Fatalf("%s: %d of %d keys are not where admin says", st.name, wrong, ownerKeys)
		}
		if st.home != "" {
			// The consumers wrote the stick table where the step expects it.
			rdb := redis.NewClient(&redis.Options{Addr: byName[st.home]})
			n, err := rdb.Exists(ctx, layout.StickKey(control.KeySrc.String(), routing.HashRecordKey(keyName(0)))).Result()
			rdb.Close()
			if err != nil || n != 1 {
				t.Fatalf("%s: no stick entry for %s on %s (%d, %v)", st.name, keyName(0), st.home, n, err)
			}
		}
		if last != nil {
			for key, b := range where {
				if last[key] != b {
					moved++
				}
			}
		}
		last = where
		t.Logf("%s: all %d keys where admin says (%v)", st.name, ownerKeys, time.Since(start).Round(time.Millisecond))
	}
	// The changes moved keys between instances (else agreement proves little).
	if moved == 0 {
		t.Fatal("no key moved across the changes")
	}
}

func keyName(k int) string { return "own-" + strconv.Itoa(k) }

// publishKeyed publishes one record for each key, tagged with dstPort tag,
// in batches of 500.
func publishKeyed(t *testing.T, ch *amqp.Channel, tag uint16) {
	t.Helper()
	var enc record.Encoder
	now := time.Now().UnixNano()
	for from := 0; from < ownerKeys; from += 500 {
		enc.Reset(now)
		for k := from; k < min(from+500, ownerKeys); k++ {
			enc.Add(&record.Record{
				TS: now, Src: netip.AddrFrom4([4]byte{10, 9, byte(k >> 8), byte(k)}), Dst: netip.MustParseAddr("192.0.2.1"),
				SrcPort: 40000, DstPort: tag, Flags: record.FlagACK, IPLen: 40, Key: keyName(k),
			})
		}
		testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{
			ContentType: record.ContentTypeBinary, DeliveryMode: amqp.Persistent, Body: enc.Bytes(),
		})
	}
}

// storedKeys waits until every key's record tagged tag is stored and
// returns the instance that holds each; a key stored twice (at least once
// delivery) must be on one instance.
func storedKeys(t *testing.T, s *system, byName map[string]string, tag uint16) map[string]string {
	t.Helper()
	var where map[string]string
	waitFor(t, 60*time.Second, fmt.Sprintf("%d records tagged %d stored", ownerKeys, tag), func() (bool, string) {
		where = map[string]string{}
		for name, addr := range byName {
			for _, r := range stored(t, addr, s.prefix, 10*time.Minute) {
				if r.DstPort != tag {
					continue
				}
				if prev, ok := where[r.Key]; ok && prev != name {
					t.Fatalf("tag %d: key %s stored on %s and %s", tag, r.Key, prev, name)
				}
				where[r.Key] = name
			}
		}
		return len(where) == ownerKeys, fmt.Sprintf("%d keys stored", len(where))
	})
	return where
}

// adminOwners asks admin for the owner of every key. The query's window is
// one old second, so admin reads next to nothing and only names the owner.
func adminOwners(t *testing.T, adminAddr string) map[string]string {
	t.Helper()
	sec := strconv.FormatInt(time.Now().Add(-2*time.Minute).Unix(), 10)
	var (
		mu   sync.Mutex
		out  = make(map[string]string, ownerKeys)
		errs = make(chan error, 1)
		jobs = make(chan int)
		wg   sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for range 8 {
		wg.Go(func() {
			for k := range jobs {
				owner, err := askOwner(client, adminAddr, keyName(k), sec)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				mu.Lock()
				out[keyName(k)] = owner
				mu.Unlock()
			}
		})
	}
	for k := range ownerKeys {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("ask admin: %v", err)
	default:
	}
	return out
}

func askOwner(client *http.Client, adminAddr, key, sec string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+adminAddr+"/api/v1/records?key="+key+"&since="+sec+"&until="+sec, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("records?key=%s: %s", key, resp.Status)
	}
	var res struct {
		Owner string `json:"owner"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return "", err
	}
	if res.Owner == "" {
		return "", fmt.Errorf("records?key=%s: admin names no owner", key)
	}
	return res.Owner, nil
}
