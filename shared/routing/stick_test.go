package routing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/control"
	"github.com/connpipe/connpipe/shared/store"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

func TestStickHome(t *testing.T) {
	tests := []struct {
		names []string
		want  int
	}{
		{nil, -1},
		{[]string{"redis-a"}, 0},
		{[]string{"redis-a", "redis-b"}, 0},
		{[]string{"redis-b", "redis-a"}, 1}, // by name, whatever the order
		{[]string{"z", "b", "c"}, 1},
	}
	for _, tt := range tests {
		tb := &control.Table{}
		for _, n := range tt.names {
			tb.Backends = append(tb.Backends, control.Backend{Name: n, Addr: "127.0.0.1:1", Weight: 1})
		}
		if got := StickHome(tb); got != tt.want {
			t.Errorf("StickHome(%v) = %d, want %d", tt.names, got, tt.want)
		}
	}
}

// Owner (admin's answer) names, for every key, the owner that Claim (the
// consumers' lookup) settled on the stick home; without an entry it names
// the ring's choice in mode hash and nobody in mode weighted.
func TestOwnerAgreesWithClaim(t *testing.T) {
	addrs := testenv.Redis(t, 3)
	layout := store.Layout{Prefix: testenv.Prefix(t), Retention: time.Minute}
	clients := map[string]*redis.Client{}
	for _, a := range addrs {
		clients[a] = redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { clients[a].Close() })
	}
	client := func(addr string) redis.Cmdable { return clients[addr] }
	tb, err := control.NewTable([]control.Backend{
		{Name: "redis-c", Addr: addrs[2], Weight: 30}, {Name: "redis-b", Addr: addrs[1], Weight: 70}, {Name: "redis-a", Addr: addrs[0], Weight: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	hashes := make([]uint64, 2000)
	offers := make([]string, len(hashes))
	for j := range hashes {
		hashes[j] = HashRecordKey(fmt.Sprint("k-", j))
		offers[j] = []string{"redis-b", "redis-c"}[j%2]
	}

	// Mode hash, not sticky: the ring, without reading Redis.
	hashTable := *tb
	hashTable.Mode = control.ModeHash
	ring, err := NewRing(&hashTable)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes[:100] {
		if got, ok := Owner(ctx, &hashTable, layout, nil, h); !ok || got.Name != hashTable.Backends[ring.Pick(h)].Name {
			t.Fatalf("hash mode: Owner = %v %v, want the ring's %s", got.Name, ok, hashTable.Backends[ring.Pick(h)].Name)
		}
	}

	// Sticky: before any claim a weighted table has no owner; after the
	// claim on the home every key's owner is the claimed one.
	sticky := *tb
	sticky.Sticky = true
	if _, ok := Owner(ctx, &sticky, layout, client, hashes[0]); ok {
		t.Fatal("weighted sticky: an owner before any claim")
	}
	home := clients[sticky.Backends[StickHome(&sticky)].Addr]
	st := Stick{Layout: layout, Kind: sticky.Key(), TTL: time.Minute}
	claimed := make([]string, len(hashes))
	n, err := st.Claim(ctx, home, sticky.Backends, hashes, offers, func(j int, owner string) { claimed[j] = owner })
	if err != nil || n != len(hashes) {
		t.Fatalf("claim: %d of %d, %v", n, len(hashes), err)
	}
	t.Cleanup(func() {
		for _, h := range hashes {
			home.Del(context.Background(), layout.StickKey(sticky.Key().String(), h))
		}
	})
	for j, h := range hashes {
		if claimed[j] != offers[j] {
			t.Fatalf("key %d: claimed %s, offered %s to an empty table", j, claimed[j], offers[j])
		}
		got, ok := Owner(ctx, &sticky, layout, client, h)
		if !ok || got.Name != claimed[j] {
			t.Fatalf("key %d: Owner = %q %v, claimed %q", j, got.Name, ok, claimed[j])
		}
	}
	// A second claim keeps the owners, whatever is offered.
	_, err = st.Claim(ctx, home, sticky.Backends, hashes, make([]string, len(hashes)), func(j int, owner string) {
		if owner != claimed[j] {
			t.Fatalf("key %d: second claim gave %s, first %s", j, owner, claimed[j])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// An owner that left the table is replaced by the offer.
	without := sticky
	without.Backends = nil
	for _, b := range sticky.Backends {
		if b.Name != "redis-c" {
			without.Backends = append(without.Backends, b)
		}
	}
	toB := make([]string, len(hashes))
	for j := range toB {
		toB[j] = "redis-b"
	}
	_, err = st.Claim(ctx, home, without.Backends, hashes, toB, func(j int, owner string) {
		want := claimed[j]
		if want == "redis-c" {
			want = "redis-b"
		}
		if owner != want {
			t.Fatalf("key %d: claim without redis-c gave %s, want %s", j, owner, want)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
