package intake

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connpipe/connpipe/shared/record"
	"github.com/connpipe/connpipe/shared/topology"
	amqp "github.com/rabbitmq/amqp091-go"
)

// round is what the receiving goroutine hands to the storing one: the
// messages that had arrived, decoded, in delivery order.
type round struct {
	s       *session
	items   []item
	records int
}

type item struct {
	d     amqp.Delivery
	batch *record.Batch // nil when the message could not be decoded
	err   error         // why it could not
}

// add decodes d and appends it to r. A body over MaxMessageBytes is not
// read at all.
func (in *Intake) add(r *round, d amqp.Delivery) {
	if len(d.Body) > in.cfg.MaxMessageBytes {
		err := fmt.Errorf("%w: body of %d bytes, over the limit of %d (MAX_MESSAGE_BYTES)", record.ErrTooLarge, len(d.Body), in.cfg.MaxMessageBytes)
		r.items = append(r.items, item{d: d, err: err})
		return
	}
	b := in.batches.Get().(*record.Batch)
	b.Records, b.Ingest = b.Records[:0], 0
	if err := record.Decode(d.ContentType, d.Body, b); err != nil {
		in.batches.Put(b)
		r.items = append(r.items, item{d: d, err: err})
		return
	}
	recv := in.cfg.Now().UnixNano()
	if b.Ingest == 0 {
		// Hand-published JSON carries no ingest time (and a binary batch
		// may say it does not know): the AMQP timestamp if the publisher
		// set one, else when it arrived here.
		if !d.Timestamp.IsZero() {
			b.Ingest = d.Timestamp.UnixNano()
		} else {
			b.Ingest = recv
		}
	}
	// Nothing entered the pipeline after it arrived here: an ingest time
	// (or a record) stamped later is stored by the receive time, so its
	// expiry cannot be pushed into the future (store.Bucket).
	b.Ingest = min(b.Ingest, recv)
	b.Received = recv
	in.countOutOfWindow(b)
	in.m.Received.Add(float64(len(b.Records)))
	r.records += len(b.Records)
	r.items = append(r.items, item{d: d, batch: b})
}

// futureSlack is how far a record's timestamp may lie after its receipt
// before it is counted as stamped in the future (clocks of capture hosts
// and consumers differ a little). Such records are stored by receive time
// whatever the slack.
const futureSlack = int64(time.Second)

// countOutOfWindow counts b's records stamped in the future or more than
// the retention window before their ingest time.
func (in *Intake) countOutOfWindow(b *record.Batch) {
	var future, past int
	oldest := b.Ingest - int64(in.cfg.Retention)
	for i := range b.Records {
		switch ts := b.Records[i].TS; {
		case ts > b.Received+futureSlack:
			future++
		case in.cfg.Retention > 0 && ts < oldest:
			past++
		}
	}
	if future > 0 {
		in.m.OutOfWindow.WithLabelValues("future").Add(float64(future))
	}
	if past > 0 {
		in.m.OutOfWindow.WithLabelValues("past").Add(float64(past))
	}
}

// DeadReason names the cause of a decode error for the dead-letter counter.
func DeadReason(err error) string {
	for _, c := range []struct {
		err    error
		reason string
	}{
		{record.ErrBadMagic, "bad_magic"},
		{record.ErrVersion, "bad_version"},
		{record.ErrTruncated, "truncated"},
		{record.ErrBadEntry, "bad_entry"},
		{record.ErrTooLarge, "too_large"},
		{record.ErrBadJSON, "bad_json"},
		{record.ErrNoRecords, "no_records"},
		{record.ErrContentTyp, "content_type"},
	} {
		if errors.Is(err, c.err) {
			return c.reason
		}
	}
	return "other"
}

// process dead-letters the round's bad messages, stores the good ones and
// acks. It runs on the one storing goroutine, round after round.
func (in *Intake) process(r *round) {
	s := r.s
	defer func() {
		in.held.Add(-int64(len(r.items)))
		for _, it := range r.items {
			if it.batch != nil {
				in.batches.Put(it.batch)
			}
		}
		s.inflight.Done()
	}()
	if s.ctx.Err() != nil {
		return // session lost: the broker redelivers these
	}
	var msgs []*record.Batch
	var lastGood uint64
	good := 0
	for _, it := range r.items {
		if it.batch == nil {
			in.deadLetter(s, it)
			continue
		}
		msgs = append(msgs, it.batch)
		lastGood = it.d.DeliveryTag
		good++
	}
	if good == 0 {
		return
	}
	if err := in.cfg.Store.Store(s.ctx, msgs); err != nil {
		s.unsafeMultiple.Store(true)
		in.log.Warn("round not stored, leaving it unacked", "messages", good, "records", r.records, "err", err)
		return
	}
	if !s.unsafeMultiple.Load() {
		if err := s.ch.Ack(lastGood, true); err != nil {
			in.log.Warn("ack stored messages (they will be redelivered and stored again)", "messages", good, "err", err)
			return
		}
		in.acked.Add(uint64(good))
		in.m.Acked.Add(float64(good))
		return
	}
	for _, it := range r.items {
		if it.batch == nil {
			continue
		}
		if err := it.d.Ack(false); err != nil {
			in.log.Warn("ack stored message (it will be redelivered and stored again)", "err", err)
			return
		}
		in.acked.Add(1)
		in.m.Acked.Inc()
	}
}

// deadLetter publishes an undecodable message to the dead-letter exchange
// with the reason in a header, waits for the broker's confirm and acks it;
// if that fails it rejects the message, which the queue dead-letters itself.
func (in *Intake) deadLetter(s *session, it item) {
	reason := DeadReason(it.err)
	in.m.DeadLettered.WithLabelValues(reason).Inc()
	in.dead.Add(1)
	in.log.Warn("records message cannot be decoded, dead-lettering it",
		"reason", reason, "err", it.err, "message_id", it.d.MessageId,
		"content_type", it.d.ContentType, "bytes", len(it.d.Body), "exchange", topology.DeadExchange)
	headers := amqp.Table{}
	for k, v := range it.d.Headers {
		headers[k] = v
	}
	headers[topology.ErrorHeader] = it.err.Error()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	err := func() error {
		dc, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, topology.DeadExchange, "", false, false, amqp.Publishing{
			Headers: headers, ContentType: it.d.ContentType, ContentEncoding: it.d.ContentEncoding,
			DeliveryMode: amqp.Persistent, CorrelationId: it.d.CorrelationId, ReplyTo: it.d.ReplyTo,
			MessageId: it.d.MessageId, Timestamp: it.d.Timestamp, Type: it.d.Type, AppId: it.d.AppId,
			Body: it.d.Body,
		})
		if err != nil {
			return err
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("broker nacked the publish")
		}
		return nil
	}()
	if err != nil {
		in.log.Warn("dead-letter publish failed, rejecting the message instead", "exchange", topology.DeadExchange, "err", err)
		if err := it.d.Nack(false, false); err != nil {
			s.unsafeMultiple.Store(true)
			in.log.Warn("reject undecodable message", "err", err)
		}
		return
	}
	if err := it.d.Ack(false); err != nil {
		s.unsafeMultiple.Store(true)
		in.log.Warn("ack dead-lettered message", "err", fmt.Errorf("%w (it will be redelivered and dead-lettered again)", err))
		return
	}
	in.acked.Add(1)
	in.m.Acked.Inc()
}
