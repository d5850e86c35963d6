// Package topology names connpipe's RabbitMQ objects and declares them.
//
//	exchange conn.records.in     fanout, durable  ← capture (and anyone) publishes records here
//	queue    conn.records        quorum, durable  ← consumers compete on it; dead-letters to conn.records.dlx
//	exchange conn.records.dlx    fanout, durable
//	queue    conn.records.dead   quorum, durable  ← undecodable messages, with header x-connpipe-error;
//	                                                 at most DeadMaxLength messages / DeadMaxBytes, oldest dropped
//	exchange conn.control.in     fanout, durable  ← routing changes are published here (admin, operators)
//	queue    conn.control        stream, durable  ← the control log: routing changes, in order
//	exchange conn.control.snapshots.in fanout     ← admin's snapshots are published here
//	queue    conn.control.snapshots stream       ← admin's snapshots of the folded table; readers start
//	                                                 from the latest and fold only what follows it
//	exchange conn.heartbeat      fanout           ← consumers report the control position they applied;
//	                                                 only the consumer role (and admin) may write it
//
// Declare is idempotent and is run again after every reconnect.
//
// # Names and permissions
//
// No exchange has the name of a queue. RabbitMQ grants a permission by
// name, whatever the object: binding exchange to exchange needs write on
// the destination and read on the source, so a role that may read a queue
// could read an exchange of the same name too and bind it into one it may
// write (the consumer bound conn.records into conn.heartbeat, and what
// capture published appeared as heartbeats). With distinct names every
// role's patterns (deployments/images/rabbitmq/roles) are anchored on
// exactly the objects it uses, and no role may read any exchange but
// admin. Releases before this used the queues' names for their exchanges;
// Declare deletes those exchanges (LegacyExchanges), since they would
// still be readable under the queues' names.
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
// # The control log's size
//
// conn.control keeps at most ControlLimits.MaxBytes (256 MiB, over a
// million changes): RabbitMQ drops its oldest segments beyond that. Readers
// start from the latest snapshot, which admin writes every 100 changes (at
// most 6.4 MiB of control messages), so what is dropped is long folded into
// a snapshot. The snapshots stream keeps 16 MiB, and never its latest
// snapshot (the segment being written is never deleted).
//
// # Queues of older releases
//
// Releases before these limits declared conn.records.dead and conn.control
// without them. RabbitMQ refuses to redeclare a queue with other arguments
// (PRECONDITION_FAILED), so Declare reports an *OlderQueueError for such a
// queue, and DeclareKeeping takes it as it is; the limits can then be put
// on it with the policy the error gives, which needs no redeclare:
//
//	rabbitmqctl set_policy --apply-to queues connpipe-dead '^conn\.records\.dead$' \
//	  '{"max-length":100000,"max-length-bytes":268435456,"overflow":"drop-head"}'
//	rabbitmqctl set_policy --apply-to queues connpipe-control '^conn\.control$' \
//	  '{"max-length-bytes":268435456}'
//
// The dead-letter queue can also be deleted (it holds only dead letters) and
// is declared afresh with the limits; the control log cannot.
package topology

import (
	"errors"
	"fmt"
	"slices"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Names of the AMQP objects.
const (
	RecordsExchange  = "conn.records.in"
	RecordsQueue     = "conn.records"
	DeadExchange     = "conn.records.dlx"
	DeadQueue        = "conn.records.dead"
	ControlStream    = "conn.control"
	ControlSnapshots = "conn.control.snapshots"
	// ControlExchange routes to the control log and SnapshotsExchange to
	// the snapshots: publishing through an exchange of its own needs write
	// permission on that exchange alone, where the default exchange would
	// let a writer reach every queue.
	ControlExchange   = "conn.control.in"
	SnapshotsExchange = "conn.control.snapshots.in"
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

// The bound of conn.records, deployed as a policy so that a queue declared
// before it takes it too: beyond MaxBytes the broker refuses (nacks) new
// publishes rather than run into its memory or disk alarm, which would
// block every publisher, admin's control writes included. A nacked batch
// is kept by capture (published again, and spooled while the queue stays
// full) until consumers make room. The compose image sets it at every
// start from RECORDS_MAX_BYTES:
//
//	rabbitmqctl set_policy --apply-to queues connpipe-records '^conn\.records$' \
//	  '{"max-length-bytes":1073741824,"overflow":"reject-publish"}'
const (
	RecordsPolicyName      = "connpipe-records"
	RecordsPolicyPattern   = `^conn\.records$`
	DefaultRecordsMaxBytes = 1 << 30
)

// RecordsPolicy is the policy's definition for a bound of maxBytes.
func RecordsPolicy(maxBytes int64) string {
	return fmt.Sprintf(`{"max-length-bytes":%d,"overflow":"reject-publish"}`, maxBytes)
}

// LegacyExchanges are the exchanges of older releases that had a queue's
// name; Declare deletes them (see the package doc).
var LegacyExchanges = []string{"conn.records", "conn.control", "conn.control.snapshots"}

// StreamLimits bound a stream: beyond MaxBytes RabbitMQ drops its oldest
// segments of SegmentBytes each.
type StreamLimits struct{ MaxBytes, SegmentBytes int64 }

// ControlLimits bound the control log (see the package doc). Tests shrink
// them before declaring.
var ControlLimits = StreamLimits{MaxBytes: 256 << 20, SegmentBytes: 16 << 20}

// OlderQueueError reports a queue declared earlier with other arguments
// (by a release without its limits); see the package doc.
type OlderQueueError struct {
	Queue  string
	Policy string // the rabbitmqctl command that puts the limits on it
	Err    error
}

func (e *OlderQueueError) Error() string {
	return fmt.Sprintf("queue %s exists with other arguments (declared by an older release without its limits): %v", e.Queue, e.Err)
}

func (e *OlderQueueError) Unwrap() error { return e.Err }

// policies are the limits of each queue an older release declared without
// them, as a policy.
var policies = map[string]string{
	DeadQueue: `rabbitmqctl set_policy --apply-to queues connpipe-dead '^conn\.records\.dead$' ` +
		fmt.Sprintf(`'{"max-length":%d,"max-length-bytes":%d,"overflow":"drop-head"}'`, DeadMaxLength, DeadMaxBytes),
	ControlStream: `rabbitmqctl set_policy --apply-to queues connpipe-control '^conn\.control$' ` +
		fmt.Sprintf(`'{"max-length-bytes":%d}'`, ControlLimits.MaxBytes),
}

// deadArgs are conn.records.dead's arguments.
var deadArgs = amqp.Table{
	"x-queue-type":       "quorum",
	"x-max-length":       DeadMaxLength,
	"x-max-length-bytes": DeadMaxBytes,
	"x-overflow":         "drop-head",
}

// Declare declares every exchange, queue and binding. It is safe to call
// on every (re)connect from every service.
func Declare(ch *amqp.Channel) error { return DeclareKeeping(ch) }

// DeclareKeeping is Declare, taking the queues named in keep as they are (a
// passive declare): those that an *OlderQueueError reported. A refused
// declare closes the channel, so each retry needs a new one.
func DeclareKeeping(ch *amqp.Channel, keep ...string) error {
	for _, name := range LegacyExchanges {
		// Deleting an exchange that does not exist succeeds.
		if err := ch.ExchangeDelete(name, false, false); err != nil {
			return fmt.Errorf("delete the older release's exchange %q: %w", name, err)
		}
	}
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
		// Cut by size, never by age: readers fold from the latest snapshot,
		// far newer than anything the limit drops.
		{ControlStream, amqp.Table{
			"x-queue-type":                    "stream",
			"x-max-length-bytes":              ControlLimits.MaxBytes,
			"x-stream-max-segment-size-bytes": ControlLimits.SegmentBytes,
		}, ControlExchange},
		// Only the latest snapshot is ever read; small segments let the
		// length limit drop old ones, never the latest (the segment being
		// written is not deleted).
		{ControlSnapshots, amqp.Table{
			"x-queue-type":                    "stream",
			"x-max-length-bytes":              16 << 20,
			"x-stream-max-segment-size-bytes": 1 << 20,
		}, SnapshotsExchange},
		{DeadQueue, deadArgs, DeadExchange},
	}
	for _, q := range queues {
		var err error
		if slices.Contains(keep, q.name) {
			_, err = ch.QueueDeclarePassive(q.name, true, false, false, false, nil)
		} else {
			_, err = ch.QueueDeclare(q.name, true, false, false, false, q.args)
		}
		var ae *amqp.Error
		if policy, ok := policies[q.name]; ok && errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return &OlderQueueError{Queue: q.name, Policy: policy, Err: err}
		}
		if err != nil {
			return fmt.Errorf("declare queue %q: %w", q.name, err)
		}
		if err := ch.QueueBind(q.name, "", q.bind, false, nil); err != nil {
			return fmt.Errorf("bind queue %q to %q: %w", q.name, q.bind, err)
		}
	}
	return nil
}
