// Package backends is the consumer's side of the Redis instances of the
// routing table: a client and a health state for each, and the Sink that
// stores every round of records on them.
//
// Store takes a round of decoded messages, routes every record by the
// route in force (package routing decides the backend), groups the records
// per backend into one store.Buckets each and writes them to their backends
// in parallel, one pipelined round trip per backend. It returns only when every record is
// stored on some instance (or its context ends), so the caller may then ack
// the messages.
//
// # Health
//
// A backend whose write fails is taken out of rotation (metric backend_up,
// a Warn log) in the state the error names (redisconn.Classify; the
// states are the rows of redisconn's table); its records of the round are
// routed again over the backends still up and written there. The checker
// puts a backend back only after a real write probe succeeds (a SET of
// 64 KiB with a short expiry: a PING answers even at maxmemory), first CheckInterval
// after it went out and then at doubling intervals up to MaxProbeInterval,
// so an instance that accepts connections but refuses writes changes state
// once instead of flapping. Each state change is logged once and counted
// (connpipe_consumer_backend_state_changes_total{state}); the state in
// force is connpipe_consumer_backend_state{state} and goes into the
// consumer's heartbeat (States). The route restarts its cycle whenever
// the set of usable backends changes. While no backend of positive weight
// is up, records wait unacked, or with DrainedFallback go to the backends
// of weight 0 that are up, in turn. When no backend
// can store, Store keeps retrying with backoff: the messages stay unacked on
// the broker and nothing is dropped.
//
// # Exactly once in effect
//
// Delivery is at least once: a batch may come again (a redelivery after a
// lost ack, a republish after a lost confirm, the spool after a capture
// restart). A batch that carries its identity (record.ID, every batch
// capture makes) is stored once all the same: its records are routed by
// their place in the producer's stream, so a second delivery sends each
// record to the instance the first sent it to, and the write there (one
// Lua call, package store) finds the record marked, writes nothing and
// says what the instance holds; those records count as duplicates skipped
// (connpipe_consumer_duplicates_skipped_total) and the rest is written.
// Records without an identity (hand-published JSON, version 1 batches) are
// stored again if delivered again.
//
// Two cases can still store a record twice, and only around a failure: a
// write that timed out after Redis applied it, whose records then go to
// another instance; and a second delivery routed while the set of
// instances in rotation differs from the first's. Nothing is ever lost.
//
// # Routing
//
// The table's mode and stick table are package routing's: the route picks
// each record's backend, and with "sticky" on routing.Stick.Claim asks the
// stick home (routing.StickHome) for the owners of a round's unknown keys.
// A key of a down backend goes to the mode's choice meanwhile (a sticky
// key's entry is kept, so it returns to its owner when that rejoins). A
// table with a new backend gets a client for it at once, so its next round
// can store there; a backend that left the table has its client closed
// once no route uses it.
//
// Each consumer caches stick owners (bounded, StickCache entries) for
// StickRefresh, so a busy key costs one lookup per StickRefresh per
// consumer, not one per record; an entry's TTL is retention + StickRefresh,
// renewed by every lookup. When the stick home is down every unknown key is
// routed by the mode's choice and counted
// (connpipe_consumer_stick_keys_total{result="fallback"}); when the home
// changes, the cache starts afresh. With sticky off none of this runs.
//
// # Files
//
// sink.go is Store and its rounds; route.go assigns records to backends
// (the route in force, or the drained fallback); health.go is each
// backend's state, the write probes and the checker; pool.go keeps one
// client per table entry; stick.go caches stick owners; metrics.go holds
// the collectors.
package backends
