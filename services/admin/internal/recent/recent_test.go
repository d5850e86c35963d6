package recent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestReadsOncePerInterval: within the interval every caller gets the
// first read's answer, error included; after it, a new read.
func TestReadsOncePerInterval(t *testing.T) {
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	reads := 0
	read := func(context.Context) (int, error) {
		reads++
		if reads == 2 {
			return 0, errors.New("down")
		}
		return reads, nil
	}
	var v Value[int]
	get := func() (int, error) { return v.Get(context.Background(), 2*time.Second, now, read) }
	for range 3 {
		if n, err := get(); n != 1 || err != nil {
			t.Fatalf("first interval: %d %v", n, err)
		}
	}
	clock = clock.Add(2 * time.Second)
	if _, err := get(); err == nil || reads != 2 {
		t.Fatalf("second read: %v after %d reads", err, reads)
	}
	clock = clock.Add(time.Second)
	if _, err := get(); err == nil || reads != 2 {
		t.Fatalf("the error is an answer for the interval too: %v after %d reads", err, reads)
	}
	clock = clock.Add(time.Second)
	if n, err := get(); n != 3 || err != nil {
		t.Fatalf("third read: %d %v", n, err)
	}
}

// TestConcurrentCallersShareARead: callers that arrive while a read runs
// wait for it rather than starting their own.
func TestConcurrentCallersShareARead(t *testing.T) {
	var v Value[int]
	var mu sync.Mutex
	reads := 0
	read := func(context.Context) (int, error) {
		mu.Lock()
		reads++
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		return 7, nil
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if n, _ := v.Get(context.Background(), time.Minute, nil, read); n != 7 {
				t.Errorf("got %d", n)
			}
		})
	}
	wg.Wait()
	if reads != 1 {
		t.Fatalf("%d reads for 8 callers within the interval", reads)
	}
}
