package redisconn_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/redis/go-redis/v9"
)

// Redis's own error replies are classified by their code, also when a
// script returns them.
func TestClassify(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t, 1)[0]})
	defer rdb.Close()
	ctx := testenv.Context(t, 10*time.Second)
	for reply, want := range map[string]redisconn.State{
		"OOM command not allowed when used memory > 'maxmemory'.": redisconn.StateOOM,
		"READONLY You can't write against a read only replica.":   redisconn.StateReadonly,
		"LOADING Redis is loading the dataset in memory":          redisconn.StateLoading,
		"MASTERDOWN Link with MASTER is down":                     redisconn.StateMasterDown,
		"NOAUTH Authentication required.":                         redisconn.StateAuth,
		"WRONGPASS invalid username-password pair":                redisconn.StateAuth,
		"ERR something else":                                      redisconn.StateDown,
	} {
		err := rdb.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, reply).Err()
		if got := redisconn.Classify(err); got != want {
			t.Errorf("%q (%v): %s, want %s", reply, err, got, want)
		}
	}
	if got := redisconn.Classify(context.DeadlineExceeded); got != redisconn.StateDown {
		t.Errorf("timeout: %s", got)
	}
	if got := redisconn.Classify(nil); got != redisconn.StateUp {
		t.Errorf("no error: %s", got)
	}
}

// Every state encodes as its name and decodes back; names are unique; a
// name this build does not know reads as down, an empty one is refused.
func TestStateText(t *testing.T) {
	seen := map[string]bool{}
	for _, st := range redisconn.States() {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatalf("%d: %v", st, err)
		}
		var back redisconn.State
		if err := json.Unmarshal(b, &back); err != nil || back != st {
			t.Errorf("%s: decoded %s, %v", b, back, err)
		}
		if seen[st.String()] || st.Doc() == "" || st.Tone() == "" {
			t.Errorf("%s: listed twice, or without a doc or tone", st)
		}
		seen[st.String()] = true
	}
	var st redisconn.State
	if err := json.Unmarshal([]byte(`"brand_new"`), &st); err != nil || st != redisconn.StateDown {
		t.Errorf("unknown name: %s, %v; want down", st, err)
	}
	if err := json.Unmarshal([]byte(`""`), &st); !errors.Is(err, redisconn.ErrUnknownState) {
		t.Errorf("empty name: %v", err)
	}
	if _, err := redisconn.ParseState("brand_new"); !errors.Is(err, redisconn.ErrUnknownState) {
		t.Errorf("ParseState: %v", err)
	}
	for _, st := range redisconn.ConsumerStates() {
		if st == redisconn.StateDraining || st == redisconn.StateEjected || st == redisconn.StateNotAllowed {
			t.Errorf("consumer states list admin's %s", st)
		}
	}
}
