package topology_test

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// roles reads deployments/images/rabbitmq/roles: role → configure, write, read.
func roles(t *testing.T) map[string][3]string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "deployments", "images", "rabbitmq", "roles")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][3]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("%s: want role configure write read: %q", path, line)
		}
		out[f[0]] = [3]string{f[1], f[2], f[3]}
	}
	return out
}

// try runs op on a fresh channel of conn and reports whether the broker
// allowed it: nil, or the broker's refusal.
func try(t *testing.T, url string, op func(ch *amqp.Channel) error) error {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := op(ch); err != nil {
		// A refused publish closes the channel: the reason is there.
		select {
		case e := <-closed:
			if e != nil {
				return e
			}
		case <-time.After(time.Second):
		}
		return err
	}
	// A refused publish closes the channel after the fact.
	select {
	case e := <-closed:
		if e != nil {
			return e
		}
		return errors.New("channel closed")
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}

func publish(exchange, key, body string) func(ch *amqp.Channel) error {
	return func(ch *amqp.Channel) error {
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, amqp.Publishing{Body: []byte(body)})
		if err != nil {
			return err
		}
		done := make(chan bool, 1)
		go func() { done <- dc.Wait() }()
		select {
		case ok := <-done:
			if !ok {
				return errors.New("nacked")
			}
		case <-time.After(2 * time.Second):
		}
		return nil
	}
}

func consume(queue string, args amqp.Table) func(ch *amqp.Channel) error {
	return func(ch *amqp.Channel) error {
		if err := ch.Qos(10, 0, false); err != nil {
			return err
		}
		_, err := ch.Consume(queue, "", false, false, false, false, args)
		return err
	}
}

func refused(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.AccessRefused
}

// TestRolesLeastPrivilege applies the compose image's roles to a test
// broker and checks each role can do its job and not the others'.
func TestRolesLeastPrivilege(t *testing.T) {
	base := testenv.AMQP(t)
	rs := roles(t)
	urls := map[string]string{}
	for _, role := range []string{"admin", "consumer", "capture", "operator"} {
		p, ok := rs[role]
		if !ok {
			t.Fatalf("roles file has no %s", role)
		}
		urls[role] = testenv.User(t, base, role, p[0], p[1], p[2])
	}
	// An older release's exchange under a queue's name, as an upgraded
	// broker still has it: Declare deletes it.
	if err := try(t, urls["admin"], func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(topology.LegacyExchanges[0], amqp.ExchangeFanout, true, false, false, false, nil)
	}); err != nil {
		t.Fatalf("admin declares an older release's exchange: %v", err)
	}
	if err := try(t, urls["admin"], topology.Declare); err != nil {
		t.Fatalf("admin declares the topology: %v", err)
	}
	addBackend := `{"op":"add_backend","backend":{"name":"evil","addr":"203.0.113.9:6379"}}`
	stream := amqp.Table{"x-stream-offset": "first"}
	cases := []roleCase{
		{"capture", "publish records", publish(topology.RecordsExchange, "", "x"), true},
		{"capture", "append add_backend to the control log", publish(topology.ControlExchange, "", addBackend), false},
		{"capture", "append add_backend through the default exchange", publish("", topology.ControlStream, addBackend), false},
		{"capture", "read the control log", consume(topology.ControlStream, stream), false},
		{"capture", "declare the topology", topology.Declare, false},
		{"consumer", "consume records", consume(topology.RecordsQueue, nil), true},
		{"consumer", "read the control log", consume(topology.ControlStream, stream), true},
		{"consumer", "read the snapshots", consume(topology.ControlSnapshots, stream), true},
		{"consumer", "publish a heartbeat", publish(topology.HeartbeatExchange, "", "{}"), true},
		{"consumer", "dead-letter a message", publish(topology.DeadExchange, "", "x"), true},
		{"consumer", "append add_backend to the control log", publish(topology.ControlExchange, "", addBackend), false},
		{"consumer", "append add_backend through the default exchange", publish("", topology.ControlStream, addBackend), false},
		{"consumer", "write a snapshot", publish(topology.SnapshotsExchange, "", "{}"), false},
		{"consumer", "publish records", publish(topology.RecordsExchange, "", "x"), false},
		{"operator", "append a change to the control log", publish(topology.ControlExchange, "", `{"op":"set_weights","weights":{"a":1}}`), true},
		{"operator", "write a snapshot", publish(topology.SnapshotsExchange, "", "{}"), false},
		{"operator", "write to any queue through the default exchange", publish("", topology.ControlSnapshots, "{}"), false},
		{"operator", "publish records", publish(topology.RecordsExchange, "", "x"), false},
		{"operator", "read records", consume(topology.RecordsQueue, nil), false},
		{"admin", "append to the control log", publish(topology.ControlExchange, "", `{"op":"sync"}`), true},
		{"admin", "write a snapshot", publish(topology.SnapshotsExchange, "", "{}"), true},
	}
	cases = append(cases, binds()...)
	for _, c := range cases {
		err := try(t, urls[c.role], c.op)
		switch {
		case c.allowed && err != nil:
			t.Errorf("%s may %s, but the broker said: %v", c.role, c.what, err)
		case !c.allowed && !refused(err) && !gone(err):
			t.Errorf("%s may not %s, but the broker said: %v (want ACCESS_REFUSED)", c.role, c.what, err)
		}
	}
}

// gone is the broker's answer for an object that does not exist: an older
// release's exchange, deleted by Declare.
func gone(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// binds is every bind a role other than admin could try: each exchange
// (today's and an older release's) into each other exchange, and each
// queue to each exchange. Every one must be refused, so that no role can
// route what another publishes into an exchange it does not own (the
// consumer binding conn.records into conn.heartbeat, to forge heartbeats
// out of capture's records).
func binds() []roleCase {
	exchanges := append([]string{topology.RecordsExchange, topology.DeadExchange, topology.ControlExchange,
		topology.SnapshotsExchange, topology.HeartbeatExchange}, topology.LegacyExchanges...)
	queues := []string{topology.RecordsQueue, topology.DeadQueue, topology.ControlStream, topology.ControlSnapshots}
	var out []roleCase
	for _, role := range []string{"consumer", "capture", "operator"} {
		for _, src := range exchanges {
			for _, dst := range exchanges {
				if src != dst {
					out = append(out, roleCase{role, "bind exchange " + src + " into " + dst, func(ch *amqp.Channel) error {
						return ch.ExchangeBind(dst, "", src, false, nil)
					}, false})
				}
			}
			for _, q := range queues {
				out = append(out, roleCase{role, "bind queue " + q + " to " + src, func(ch *amqp.Channel) error {
					return ch.QueueBind(q, "", src, false, nil)
				}, false})
			}
		}
	}
	return out
}

// roleCase is one thing a role tries, and whether the broker must allow it.
type roleCase struct {
	role, what string
	op         func(ch *amqp.Channel) error
	allowed    bool
}
