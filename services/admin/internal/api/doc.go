// Package api is admin's HTTP API: the routing weights (read and change),
// the status of consumers and backends, and stored records read back.
// Every body is JSON.
//
// # Who may do what
//
// Writes need "Authorization: Bearer $ADMIN_TOKEN" and a body sent as
// "Content-Type: application/json" (else 415). Reads of the weights,
// status, stats and records need "Authorization: Bearer $ADMIN_READ_TOKEN"
// or the write token (401 without one, 403 with a wrong one); the page at
// / and /healthz need none. Every request must name this server in Host
// (ADMIN_ALLOWED_HOSTS; else 421 Misdirected Request), and a write that
// carries an Origin must come from admin's own origin (else 403): a page
// of another site, or one reached through a rebound DNS name, can neither
// read nor write. /metrics is served on METRICS_ADDR only. With TLS_CERT
// and TLS_KEY the API is https. Passwords in URLs (CAPTURE_METRICS_URL,
// backend addresses) are never shown.
//
// The tokens are those of named operators (ADMIN_TOKENS,
// ADMIN_TOKENS_FILE; ADMIN_TOKEN is "admin", ADMIN_READ_TOKEN "reader"):
// a read operator may read, a write operator may read and write, and the
// operator's name is the "by" of each change it makes.
//
// # History of changes
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" 'http://127.0.0.1:8080/api/v1/history?since=1h'
//	{"entries":[{"position":7,"time":"2026-12-06T16:21:19Z","version":3,"applied":true,
//	             "by":"alice","id":"admin-1f…","op":"set_weights","what":"weights redis-a=40 redis-b=60"}]}
//
// Every control-log message admin folded since it started (from its
// snapshot), oldest first; since is a duration back from now, an RFC 3339
// time or Unix seconds. A refused message has "refused" with the reason.
//
// # Read the weights
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" http://127.0.0.1:8080/api/v1/weights
//	{"version":3,"position":41,"backends":[{"name":"redis-a","addr":"127.0.0.1:6379","weight":30},
//	                                       {"name":"redis-b","addr":"127.0.0.1:6380","weight":70}]}
//
// The ETag header is the version in quotes ("3"). 503 until the control
// log has been read once.
//
// # Change the weights
//
//	curl -s -X PUT http://127.0.0.1:8080/api/v1/weights \
//	  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'If-Match: "3"' \
//	  -H 'Content-Type: application/json' -d '{"weights":{"redis-a":50,"redis-b":50}}'
//
// Backends not named keep their weight; 0 drains a backend; weights are
// integers 0..256 and at least one must stay above 0. The change is
// appended to the control log (conn.control) and the answer comes from the
// fold of the log, the same fold every consumer runs:
//
//	200  applied: the new table, plus "change_position" (its log offset),
//	     "id" (the control message id), "converged" and "pending" (below)
//	400  refused: unknown backend, weight out of range, no capacity left,
//	     malformed body — "error" says which field
//	401  no token; 403 wrong token (nothing is published)
//	409  stale version: the If-Match header (or "expect_version" in the
//	     body, same meaning) is not the version in force; "version" says
//	     which is. Two writers with the same expected version: one wins.
//	503  RabbitMQ unreachable or the control log not read yet
//
// Add ?wait=10s to wait (at most 5m) until every live consumer has applied
// the change (its heartbeat position reached change_position):
//
//	curl -s -X PUT 'http://127.0.0.1:8080/api/v1/weights?wait=10s' \
//	  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d '{"weights":{"redis-a":0}}'
//	{"version":5,...,"change_position":57,"converged":false,"pending":["consumer-2f1c"]}
//
// Without ?wait, "converged" and "pending" are as of the answer.
//
// # Status
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" http://127.0.0.1:8080/api/v1/status
//
// The table and version in force; each consumer heard of (id, host,
// alive, ready, applied version and position, converged, versions_behind
// the table, records stored and "rate" in records/s over its heartbeats of
// the last 5 s, "stored" per backend and "unacked" messages when the
// consumer reports them, messages acked, age of its last heartbeat); each
// backend (address with any password redacted, weight, target share,
// "state": up, draining at weight 0, ejected when it does not answer PING,
// not_allowed when BACKEND_ALLOW leaves its host out — then it is never
// dialled and "error" says why — or the state live consumers hold it out
// of rotation in; used_memory from INFO); "states", every state there is
// with its "tone" (up, out, drain, wait) and what it means; and
// whether every live consumer has converged on the table. A consumer
// silent for CONSUMER_TIMEOUT is dead (alive=false) and no longer counts
// for convergence.
//
// "broker" has the messages ready on conn.records, its consumers, and the
// messages on the dead-letter queue conn.records.dead, from passive queue
// declares on admin's own connection ("error" if RabbitMQ cannot be
// asked). "capture" (null without CAPTURE_METRICS_URL) has a capture's
// counters scraped from its /metrics: packets, records_published,
// records_confirmed, kernel_drops, decode_errors (and by reason). Both are
// read at most once a second, however many clients ask.
//
// # Alerts: what fires in Prometheus
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" http://127.0.0.1:8080/api/v1/alerts
//	{"configured":true,"link":"http://127.0.0.1:9090","at":"2026-01-02T03:04:05Z",
//	 "firing":[{"name":"ConnpipeBrokerDown","severity":"critical","summary":"…",
//	            "runbook":"docs/operations.md#connpipebrokerdown",
//	            "labels":{"instance":"rabbitmq:15692","job":"rabbitmq"},"active_at":"…"}]}
//
// The alerts firing in the Prometheus at PROMETHEUS_URL (pending ones left
// out), critical first, at most 100 ("truncated" counts the rest); admin
// asks Prometheus at most every 10 s whoever asks here. "error" says why
// Prometheus could not be read (counted in
// connpipe_admin_prometheus_errors_total); without PROMETHEUS_URL the
// answer is {"configured":false,"firing":[]}. The page shows them with a
// link to PROMETHEUS_LINK_URL.
//
// # Stats: records per instance and second
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" http://127.0.0.1:8080/api/v1/stats
//	{"version":2,"at":1700000060,"from":1699999760,"to":1700000059,
//	 "share":{"from":1700000000,"to":1700000059},"rate":{"from":1700000055,"to":1700000059},
//	 "backends":[{"name":"redis-a","addr":"127.0.0.1:6379","counts":[0,0,…,297,303],
//	              "records":18012,"share":0.3002,"rate":300.2}, …],
//	 "total":60000,"took_ms":1.4,"read_bytes":25000}
//
// Counted from the Redis buckets themselves (package tally): "counts" is
// the records each instance holds per second from "from" to "to" (the last
// 5 minutes, or RETENTION if shorter; the second in progress is left out),
// "records" and "share" cover the last 60 complete seconds (the share is of
// every instance's records, -1 when there are none), and "rate" is the mean
// records/s of the last 5 seconds. A second is the one the record entered
// the pipeline, as in GET /api/v1/records, so the numbers are what reading
// the store gives. Refreshed at most once a second: each refresh reads the
// per-second counters of the history (one MGET per instance) and no record
// (seconds of store layout v1, until they expire, are counted from the
// bytes appended since the last refresh).
//
// # The web page
//
// GET / serves the operators' page (package web): the same numbers,
// polled from this API every second, and a form that changes the weights
// with PUT /api/v1/weights.
//
// # Records
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" 'http://127.0.0.1:8080/api/v1/records?since=1m&src=10.0.0.7&limit=100'
//	{"records":[{"backend":"redis-b","ts_ns":1700000000123456789,"src_ip":"10.0.0.7",
//	  "dst_ip":"10.0.0.1","src_port":51234,"dst_port":8080,"tcp_flags":2,"ip_len":60}],
//	 "count_by_backend":{"redis-a":0,"redis-b":1},"truncated":false,"from":1700000000,"to":1700000065,
//	 "bytes_fetched":36880}
//
//	curl -s -H "Authorization: Bearer $ADMIN_READ_TOKEN" 'http://127.0.0.1:8080/api/v1/records?since=15m&count=true'
//	{"count_by_backend":{"redis-a":1571,"redis-b":3664},"total":5235,"source":"counters",
//	 "from":1699999166,"to":1700000065,"bytes_fetched":8}
//
// since and until are a duration back from now (90s, 5m), an RFC 3339 time
// or Unix seconds; since defaults to 1m, until to now (plus 5 s for clock
// skew). The window selects the buckets of the seconds records entered the
// pipeline (see package readback). src and dst filter on IP; limit
// (default 10000, at most 100000: more is a 400 naming the cap) bounds the
// answer and "truncated" says there was more. The answer is written record
// by record as it is encoded, never built whole in memory. "bytes_fetched"
// is what the question read from Redis: with src, one shard of each second
// (a 32nd of the window, package store).
//
// count=true answers with how many records each instance holds for the
// window and filter, with no limit: from the per-second counters when
// there is no filter ("source":"counters"), else by reading and matching
// ("source":"scan").
// A backend that cannot be read is named in "errors"; if none can, 503.
//
// In mode hash, a query that names the whole hash key (src for "src", dst
// for "dst", both for "pair") asks only the instance that owns the key —
// its stick-table entry when sticky, else the ring's choice — and says so
// in "owner". Records stored elsewhere while the owner was down are then
// not seen; all=true asks every instance. If the owner cannot be read,
// every instance is asked.
//
// # Backends and routing mode
//
// Add a Redis instance (consumers use it as soon as they fold the change,
// no restart), remove one, or choose the routing mode; each takes the token,
// If-Match and ?wait, and answers like PUT /api/v1/weights:
//
//	curl -s -X POST 'http://127.0.0.1:8080/api/v1/backends?wait=10s' \
//	  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
//	  -d '{"name":"redis-c","addr":"127.0.0.1:6381","weight":50}'
//	curl -s -X DELETE http://127.0.0.1:8080/api/v1/backends/redis-c \
//	  -H "Authorization: Bearer $ADMIN_TOKEN"
//	curl -s -X PUT http://127.0.0.1:8080/api/v1/mode \
//	  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d '{"mode":"hash","hash_key":"src","sticky":true}'
//
// mode is "weighted" or "hash"; hash_key "src", "dst", "pair" or "flow";
// fields left out keep their value. A weight left out of a new backend is
// 1. addr is host:port, redis://user:password@host:port/db or rediss://…
// (TLS). Refusals (400) name the cause: duplicate name, bad address, a
// host outside BACKEND_ALLOW (nothing is published), unknown backend,
// removing the last backend with weight > 0.
//
// # Operations
//
//	curl -s http://127.0.0.1:8080/healthz     # 200 once the control log has been read
//	curl -s http://127.0.0.1:9103/healthz     # the same on METRICS_ADDR
//	curl -s http://127.0.0.1:9103/metrics     # Prometheus, on METRICS_ADDR only
package api
