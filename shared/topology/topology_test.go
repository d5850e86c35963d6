package topology_test

import (
	"context"
	"errors"
	"log/slog"
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

// A dead-letter queue declared by an older release (no limits) makes
// Declare report ErrDeadQueueArgs, and Dial still succeeds: it takes the
// old queue as it is, and dead letters still reach it.
func TestDialTakesAnOldDeadQueue(t *testing.T) {
	url := testenv.AMQP(t)
	ch := testenv.Channel(t, url)
	if _, err := ch.QueueDeclare(topology.DeadQueue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	if err := topology.Declare(testenv.Channel(t, url)); !errors.Is(err, topology.ErrDeadQueueArgs) {
		t.Fatalf("Declare over an old dead queue: %v, want %v", err, topology.ErrDeadQueueArgs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := broker.Dial(ctx, url, "old dead queue", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("dial over an old dead queue: %v", err)
	}
	defer conn.Close()
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
