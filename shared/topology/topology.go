// Package topology names connpipe's RabbitMQ objects and declares them.
//
//	exchange conn.records        fanout, durable  ← capture (and anyone) publishes records here
//	queue    conn.records        quorum, durable  ← consumers compete on it; dead-letters to conn.records.dlx
//	exchange conn.records.dlx    fanout, durable
//	queue    conn.records.dead   quorum, durable  ← undecodable messages, with header x-connpipe-error
//	exchange conn.control        fanout, durable  ← routing changes are published here (admin, operators)
//	queue    conn.control        stream, durable  ← the control log: routing changes, in order
//	exchange conn.control.snapshots fanout        ← admin's snapshots are published here
//	queue    conn.control.snapshots stream       ← admin's snapshots of the folded table; readers start
//	                                                 from the latest and fold only what follows it
//	exchange conn.heartbeat      fanout           ← consumers report the control position they applied
//
// Declare is idempotent and is run again after every reconnect.
package topology

import (
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
)

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
		{DeadQueue, amqp.Table{"x-queue-type": "quorum"}, DeadExchange},
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
	return nil
}
