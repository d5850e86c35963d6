package topology_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/broker"
	"github.com/connpipe/connpipe/shared/testenv"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The dead-letter queue is declared with a length and byte limit that
// drop its oldest messages, and declaring again is harmless.
func TestDeadQueueIsBounded(t *testing.T) {
	url := testenv.AMQP(t)
	for range 2 {
		if err := topology.Declare(testenv.Channel(t, url)); err != nil {
			t.Fatal(err)
		}
	}
	// RabbitMQ refuses a declaration whose arguments differ from the
	// queue's (PRECONDITION_FAILED): one without the limits is refused,
	// so the queue has them. (The management API's per-queue details are
	// not asked: in RabbitMQ 3.10 they can crash its statistics.)
	ch := testenv.Channel(t, url)
	_, err := ch.QueueDeclare(topology.DeadQueue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Fatalf("declaring %s without its limits: %v, want PRECONDITION_FAILED (the queue has no limits)", topology.DeadQueue, err)
	}
}

// A dead-letter queue and a control log declared by an older release
// (without their limits) make Declare report an *OlderQueueError with the
// policy to apply, and Dial still succeeds: it takes the old queues as
// they are, and dead letters and control messages still reach them.
func TestDialTakesOlderQueues(t *testing.T) {
	url := testenv.AMQP(t)
	ch := testenv.Channel(t, url)
	if _, err := ch.QueueDeclare(topology.DeadQueue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(topology.ControlStream, true, false, false, false,
		amqp.Table{"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 16 << 20}); err != nil {
		t.Fatal(err)
	}
	var old *topology.OlderQueueError
	if err := topology.Declare(testenv.Channel(t, url)); !errors.As(err, &old) || old.Queue != topology.ControlStream ||
		!strings.Contains(old.Policy, `'{"max-length-bytes":268435456}'`) {
		t.Fatalf("Declare over an old control log: %v, want an *OlderQueueError for %s with its policy", err, topology.ControlStream)
	}
	if err := topology.DeclareKeeping(testenv.Channel(t, url), topology.ControlStream); !errors.As(err, &old) || old.Queue != topology.DeadQueue {
		t.Fatalf("Declare over an old dead queue: %v, want an *OlderQueueError for %s", err, topology.DeadQueue)
	}
	var logs testenv.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := broker.Dial(ctx, url, "older queues", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("dial over older queues: %v", err)
	}
	defer conn.Close()
	for _, q := range []string{topology.DeadQueue, topology.ControlStream} {
		if !strings.Contains(logs.String(), "queue="+q+" policy=") {
			t.Errorf("no warning with the policy for %s:\n%s", q, logs.String())
		}
	}
	pub := testenv.Channel(t, url)
	testenv.Publish(t, pub, topology.DeadExchange, "", amqp.Publishing{Body: []byte("x")})
	if _, ok, err := pub.Get(topology.DeadQueue, true); err != nil || !ok {
		t.Fatalf("dead letter did not reach the old queue: ok %v err %v", ok, err)
	}
}

// A records message that is returned to the queue again and again (a
// consumer that fails on it every time) is dead-lettered by RabbitMQ after
// DeliveryLimit redeliveries, with the reason delivery_limit, and never
// loops.
func TestDeliveryLimitDeadLetters(t *testing.T) {
	url := testenv.AMQP(t)
	ch := testenv.Channel(t, url)
	if err := topology.Declare(ch); err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, ch, topology.RecordsExchange, "", amqp.Publishing{Body: []byte("poison"), MessageId: "p1"})
	deliveries := 0
	var d amqp.Delivery
	for deadline := time.Now().Add(30 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("after %d deliveries the message is not dead-lettered", deliveries)
		}
		r, ok, err := ch.Get(topology.RecordsQueue, false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			deliveries++
			if deliveries > 10*topology.DeliveryLimit {
				t.Fatalf("delivered %d times: the delivery limit does not hold", deliveries)
			}
			if err := r.Nack(false, true); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if d, ok, err = ch.Get(topology.DeadQueue, true); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	reason, _ := d.Headers["x-first-death-reason"].(string)
	t.Logf("delivered %d times, then dead-lettered with reason %q", deliveries, reason)
	if d.MessageId != "p1" || reason != "delivery_limit" {
		t.Fatalf("dead letter %q with reason %q, want p1 with delivery_limit", d.MessageId, reason)
	}
	if deliveries != topology.DeliveryLimit+1 {
		t.Fatalf("delivered %d times, want %d", deliveries, topology.DeliveryLimit+1)
	}
}
