// Package topology names connpipe's RabbitMQ objects and declares them.
//
//	exchange conn.records        fanout, durable  ← capture (and anyone) publishes records here
//	queue    conn.records        quorum, durable  ← consumers compete on it; dead-letters to conn.records.dlx
//	exchange conn.records.dlx    fanout, durable
//	queue    conn.records.dead   quorum, durable  ← undecodable messages, with header x-connpipe-error;
//	                                                 at most DeadMaxLength messages / DeadMaxBytes, oldest dropped
//	exchange conn.control        fanout, durable  ← routing changes are published here (admin, operators)
//	queue    conn.control        stream, durable  ← the control log: routing changes, in order
//	exchange conn.control.snapshots fanout        ← admin's snapshots are published here
//	queue    conn.control.snapshots stream       ← admin's snapshots of the folded table; readers start
//	                                                 from the latest and fold only what follows it
//	exchange conn.heartbeat      fanout           ← consumers report the control position they applied
//
// Declare is idempotent and is run again after every reconnect.
//
// # Dead letters
//
// A message lands on conn.records.dead when a consumer cannot decode it
// (the reason in x-connpipe-error) or when RabbitMQ gave up on it after
// DeliveryLimit deliveries (x-first-death-reason: delivery_limit). The
// queue keeps the newest DeadMaxLength messages and DeadMaxBytes bytes and
// drops the oldest beyond that (x-overflow drop-head), so a flood of bad
// messages cannot fill the broker.
//
// Releases before these limits declared conn.records.dead without them.
// RabbitMQ refuses to redeclare a queue with other arguments
// (PRECONDITION_FAILED), so Declare reports ErrDeadQueueArgs for such a
// queue and DeclareExistingDead takes it as it is; the limits can then be
// put on it with a policy, which needs no redeclare:
//
//	rabbitmqctl set_policy --apply-to queues connpipe-dead '^conn\.records\.dead$' \
//	  '{"max-length":100000,"max-length-bytes":268435456,"overflow":"drop-head"}'
//
// or the queue can be deleted (it holds only dead letters) and is declared
// afresh with the limits.
package topology

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Names of the AMQP objects.
const (
	RecordsExchange  = "conn.records"
	RecordsQueue     = "conn.records"
	DeadExchange     = "conn.records.dlx"
	DeadQueue        = "conn.records.dead"
	ControlStream    = "conn.control"
	ControlSnapshots = "conn.control.snapshots"
	// ControlExchange routes to the control log and SnapshotsExchange to
	// the snapshots: publishing through an exchange of its own needs write
	// permission on that exchange alone, where the default exchange would
	// let a writer reach every queue.
	ControlExchange   = "conn.control"
	SnapshotsExchange = "conn.control.snapshots"
	HeartbeatExchange = "conn.heartbeat"

	// ErrorHeader carries the reason a message was dead-lettered.
	ErrorHeader = "x-connpipe-error"
	// DeliveryLimit is how often a records message is redelivered before
	// RabbitMQ dead-letters it (a consumer that crashes on it every time).
	DeliveryLimit = 20

	// DeadMaxLength and DeadMaxBytes bound the dead-letter queue; beyond
	// them its oldest messages are dropped.
	DeadMaxLength = 100000
	DeadMaxBytes  = 256 << 20
)

// ErrDeadQueueArgs reports a conn.records.dead declared earlier with other
// arguments (without the length limits); see the package doc.
var ErrDeadQueueArgs = errors.New("queue " + DeadQueue + " exists with other arguments (declared by an older release without its length limit)")

// deadArgs are conn.records.dead's arguments.
var deadArgs = amqp.Table{
	"x-queue-type":       "quorum",
	"x-max-length":       DeadMaxLength,
	"x-max-length-bytes": DeadMaxBytes,
	"x-overflow":         "drop-head",
}

// Declare declares every exchange, queue and binding. It is safe to call
// on every (re)connect from every service.
func Declare(ch *amqp.Channel) error {
	for _, ex := range []struct{ name, kind string }{
		{RecordsExchange, amqp.ExchangeFanout},
		{DeadExchange, amqp.ExchangeFanout},
		{HeartbeatExchange, amqp.ExchangeFanout},
		{ControlExchange, amqp.ExchangeFanout},
		{SnapshotsExchange, amqp.ExchangeFanout},
	} {
		if err := ch.ExchangeDeclare(ex.name, ex.kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q: %w", ex.name, err)
		}
	}
	queues := []struct {
		name string
		args amqp.Table
		bind string
	}{
		{RecordsQueue, amqp.Table{
			"x-queue-type":           "quorum",
			"x-dead-letter-exchange": DeadExchange,
			"x-delivery-limit":       DeliveryLimit,
		}, RecordsExchange},
		{ControlStream, amqp.Table{
			"x-queue-type": "stream",
			// The log is folded from the start; it is small (one message per
			// change) and must not be cut by age. Segments bound the file size.
			"x-stream-max-segment-size-bytes": 16 << 20,
		}, ControlExchange},
		// Only the latest snapshot is ever read; small segments let the
		// length limit drop old ones, never the latest (the segment being
		// written is not deleted).
		{ControlSnapshots, amqp.Table{
			"x-queue-type":                    "stream",
			"x-max-length-bytes":              16 << 20,
			"x-stream-max-segment-size-bytes": 1 << 20,
		}, SnapshotsExchange},
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q.name, true, false, false, false, q.args); err != nil {
			return fmt.Errorf("declare queue %q: %w", q.name, err)
		}
		if q.bind != "" {
			if err := ch.QueueBind(q.name, "", q.bind, false, nil); err != nil {
				return fmt.Errorf("bind queue %q to %q: %w", q.name, q.bind, err)
			}
		}
	}
	// The dead-letter queue comes last: if an older release declared it
	// without limits, everything else is declared already and the caller
	// can take it as it is (DeclareExistingDead) on a new channel.
	if _, err := ch.QueueDeclare(DeadQueue, true, false, false, false, deadArgs); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return fmt.Errorf("%w: %v", ErrDeadQueueArgs, err)
		}
		return fmt.Errorf("declare queue %q: %w", DeadQueue, err)
	}
	return bindDead(ch)
}

// DeclareExistingDead takes an existing conn.records.dead as it is (a
// passive declare) and binds it. It is what to run, on a new channel,
// after Declare reported ErrDeadQueueArgs.
func DeclareExistingDead(ch *amqp.Channel) error {
	if _, err := ch.QueueDeclarePassive(DeadQueue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %q (passive): %w", DeadQueue, err)
	}
	return bindDead(ch)
}

func bindDead(ch *amqp.Channel) error {
	if err := ch.QueueBind(DeadQueue, "", DeadExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to %q: %w", DeadQueue, DeadExchange, err)
	}
	return nil
}
