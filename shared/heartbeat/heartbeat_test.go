package heartbeat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/heartbeat"
	"github.com/connpipe/connpipe/shared/redisconn"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		body    string
		wantErr bool
	}{
		{`{"consumer":"c1","version":2,"position":10,"ready":true}`, false},
		{`{"version":2}`, true},
		{`not json`, true},
		{``, true},
	}
	for _, tt := range tests {
		m, err := heartbeat.Decode([]byte(tt.body))
		if (err != nil) != tt.wantErr {
			t.Errorf("Decode(%q) err = %v, wantErr %v", tt.body, err, tt.wantErr)
		}
		if err == nil && (m.Consumer != "c1" || m.Position != 10 || !m.Ready) {
			t.Errorf("Decode(%q) = %+v", tt.body, m)
		}
	}
}

// TestDecodeBounds: a heartbeat over a bound is refused with the reason
// counted, and a body over MaxBytes is refused whatever it holds.
func TestDecodeBounds(t *testing.T) {
	many := map[string]uint64{}
	for i := range heartbeat.MaxEntries + 1 {
		many[fmt.Sprintf("b%d", i)] = 1
	}
	wide, _ := json.Marshal(heartbeat.Message{Consumer: "c1", Stored: many})
	long, _ := json.Marshal(heartbeat.Message{Consumer: strings.Repeat("x", heartbeat.MaxIDLen+1)})
	big := []byte(`{"consumer":"c1","host":"` + strings.Repeat("h", heartbeat.MaxBytes) + `"}`)
	fit, _ := json.Marshal(heartbeat.Message{Consumer: "c1", Stored: map[string]uint64{"redis-a": 1}, Out: map[string]string{"redis-b": "down"}})
	for _, tt := range []struct {
		name   string
		body   []byte
		reason string
	}{{"map over MaxEntries", wide, "too_many_entries"}, {"id over MaxIDLen", long, "too_large"},
		{"body over MaxBytes", big, "too_large"}, {"not json", []byte("{"), "invalid"}, {"fits", fit, ""}} {
		_, err := heartbeat.Decode(tt.body)
		if (err == nil) != (tt.reason == "") || (err != nil && heartbeat.Reason(err) != tt.reason) {
			t.Errorf("%s: err %v, want reason %q", tt.name, err, tt.reason)
		}
	}
}

// listen binds a queue of the test's own to the heartbeat exchange.
func listen(t *testing.T, amqpURL string) <-chan amqp.Delivery {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", topology.HeartbeatExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// next decodes the next heartbeat from consumer id.
func next(t *testing.T, ds <-chan amqp.Delivery, id string, within time.Duration) heartbeat.Message {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case d := <-ds:
			m, err := heartbeat.Decode(d.Body)
			if err != nil {
				t.Fatal(err)
			}
			if d.ContentType != "application/json" || d.DeliveryMode != amqp.Transient {
				t.Fatalf("heartbeat published as %q, delivery mode %d", d.ContentType, d.DeliveryMode)
			}
			if m.Consumer == id {
				return m
			}
		case <-deadline:
			t.Fatalf("no heartbeat from %s within %s", id, within)
		}
	}
}

// TestPublisher: heartbeats come every interval and at once on a kick,
// decode to what was sent, and come again after the network to the broker
// was cut and restored.
func TestPublisher(t *testing.T) {
	real := testenv.AMQP(t)
	u, _ := url.Parse(real)
	p := testenv.NewProxy(t, u.Host)
	via := *u
	via.Host = p.Addr
	ds := listen(t, real)

	id := "hb-" + testenv.ID()
	var n atomic.Int64
	kick := make(chan struct{})
	pub := heartbeat.NewPublisher(heartbeat.Config{
		URL: via.String(), Name: "heartbeat test", Interval: time.Hour, Kick: kick,
		Beat: func() heartbeat.Message {
			return heartbeat.Message{Consumer: id, Records: uint64(n.Add(1)), Stored: map[string]uint64{"a": 1}, SentAt: time.Now().UnixNano()}
		},
	})
	ctx, cancel := context.WithCancel(testenv.Context(t, time.Minute))
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx) }()

	if m := next(t, ds, id, 20*time.Second); m.Records != 1 || m.Stored["a"] != 1 {
		t.Fatalf("first heartbeat %+v", m)
	}
	kick <- struct{}{}
	if m := next(t, ds, id, 5*time.Second); m.Records != 2 {
		t.Fatalf("heartbeat after a kick %+v, want the second", m)
	}
	if st := pub.Broker(); st.State != broker.StateUp || st.Sessions != 1 {
		t.Fatalf("broker status %+v, want up once", st)
	}
	p.Cut()
	p.Restore(t)
	// A new session sends one at once.
	if m := next(t, ds, id, 20*time.Second); m.Records < 3 {
		t.Fatalf("heartbeat after the cut %+v", m)
	}
	if st := pub.Broker(); st.Sessions != 2 {
		t.Errorf("broker status %+v after the cut, want a second session", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Backend states travel typed, with the form the release before reads
// beside them; a heartbeat of that release (only "out") reads as typed.
func TestBackendStates(t *testing.T) {
	var m heartbeat.Message
	m.Consumer = "c1"
	m.SetBackends(map[string]heartbeat.Backend{"redis-b": {State: redisconn.StateOOM, Reason: "OOM command not allowed", Since: 7}})
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `"backends":{"redis-b":{"state":"oom","reason":"OOM command not allowed","since":7}}`) ||
		!strings.Contains(string(body), `"out":{"redis-b":"oom: OOM command not allowed"}`) {
		t.Fatalf("encoded %s", body)
	}
	got, err := heartbeat.Decode(body)
	if err != nil || got.Backends["redis-b"] != m.Backends["redis-b"] {
		t.Fatalf("decoded %+v, %v", got.Backends, err)
	}
	old, err := heartbeat.Decode([]byte(`{"consumer":"c0","out":{"redis-a":"readonly: READONLY You can't write against a read only replica.","redis-c":"from_a_newer_release: x"}}`))
	want := map[string]heartbeat.Backend{
		"redis-a": {State: redisconn.StateReadonly, Reason: "READONLY You can't write against a read only replica."},
		"redis-c": {State: redisconn.StateDown, Reason: "x"},
	}
	if err != nil || len(old.Backends) != 2 || old.Backends["redis-a"] != want["redis-a"] || old.Backends["redis-c"] != want["redis-c"] {
		t.Fatalf("release before: %+v, %v", old.Backends, err)
	}
	if _, err := heartbeat.Decode([]byte(`{"consumer":"c0","backends":{"redis-a":{"state":""}}}`)); err == nil {
		t.Fatal("a backend with an empty state decoded")
	}
}
