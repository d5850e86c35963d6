// Package routing alone answers "which backend gets this record" and
// "which backend owns this key": the consumers route every record by it and
// admin asks it where a key's records are, so the two cannot drift apart.
//
// A routing table (package control: backends, weights, mode, hash key,
// sticky) becomes a Route (NewRoute). Its Pick is the mode's choice:
// "weighted" by the exact round-robin of Schedule, "hash" by the weighted
// rendezvous Ring on the table's hash key (KeyFor; a record with a payload
// key is routed by that key). With "sticky" on, a key's first owner is
// kept in the stick table (Stick) on the stick home (StickHome), and Owner
// is the answer admin gives for a key: the stick entry, else the ring's
// choice.
//
// # Weighted round-robin (mode "weighted")
//
// With weights w_i (Σ = W), every W consecutive picks give backend i exactly
// w_i records, and after any prefix of n picks since the schedule was built
// (or since its set of healthy backends last changed) every backend's count
// c_i satisfies |c_i − n·w_i/W| < 1: the split is exact to within one record
// at every point, not only at the end of a cycle.
//
// nginx's smooth weighted round-robin (add w_i to every current weight,
// pick the largest, subtract W from it) was the starting point. It gives the
// right counts per cycle and keeps |c_i − n·w_i/W| < 1 for two or three
// backends, but with more it can fall behind by more than a record (weights
// 41/163/249/1/1/1/249/1 lag by 1.32 records after 378 picks). So this
// schedule orders the picks as unit jobs with windows (the "quota method"):
// backend i's k-th pick of a cycle may come no earlier than pick
// ⌊(k−1)·W/w_i⌋+1 (so it never runs ahead by a record) and no later than pick
// ⌈k·W/w_i⌉ (so it never falls behind by one). Earliest deadline first over
// these windows meets every deadline, so each prefix stays within quota.
// The sequence depends only on the ratios of the weights: 30/70 picks the
// same backends in the same order as 3/7.
//
// A weight of 0 drains a backend. A backend marked down is left out and its
// share goes to the others in proportion to their weights; any change of the
// set of usable backends restarts the cycle, so the new split is exact from
// the change on. A new routing table is a new Route, so a new Schedule,
// which also starts a fresh cycle.
//
// A Schedule is not safe for concurrent use: one goroutine routes.
//
// # Consistent hashing (mode "hash")
//
// A Ring sends every record with the same key to the same backend by
// weighted rendezvous hashing (highest random weight): for a key k and each
// backend i with weight w_i > 0, compute u = h(k, i) ∈ (0,1) and the score
// −w_i / ln(u); the key goes to the backend with the highest score.
//
// Why rendezvous rather than a ring of points (ketama, HAProxy's
// hash-type consistent) or Maglev:
//
//   - Shares are exact in expectation: P(i wins) = w_i / Σw for any weights
//     (the score is an exponential race), with no virtual nodes to tune.
//     Ketama's error shrinks only with the number of points per backend;
//     Maglev's with the table size, and both need rebuilding on change.
//   - Movement is minimal: raising w_i only raises i's scores, so keys move
//     only onto i; lowering it moves keys only off i; adding a backend
//     moves keys only onto it; removing one moves only its keys. Going from
//     30/70 to 50/50 moves, in expectation, exactly the 20 % the weights
//     demand. (Changing two weights at once among three or more backends
//     also reshuffles some keys of the unchanged ones: 20/30/50 → 30/30/40
//     moves 12.7 % for a 10 % minimum. One weight at a time is minimal.)
//   - A down backend is simply skipped: its keys go to their next highest
//     score, spread over the others by weight, and every other key stays.
//   - Nothing to build: a table change is a new slice of weights.
//
// The cost is one score per backend per record (a hash mix and a log),
// O(n) in the number of backends — tens of nanoseconds for the handful of
// Redis instances a pool has. Measured figures are in BenchmarkRing
// (go test -bench Ring github.com/connpipe/connpipe/shared/routing).
//
// Every consumer must pick the same backend for a key, so nothing here is
// seeded per process: keys are hashed with xxhash64 and the per-backend
// hash is a fixed mix of the key hash with the xxhash of the backend's
// name (not its address, so moving an instance to a new address moves no
// keys).
//
// # Stick table (sticky)
//
// A key (the table's hash key: src, dst, pair or flow, or a record's
// payload key) stays on the backend where its first record landed for as
// long as it keeps sending, plus the retention window: HAProxy's stick
// table, shared by every consumer through one Redis instance, the stick
// home (StickHome: the table's first backend by name). Its entries are
// package store's StickKey → backend name. Stick.Claim is one Lua call
// for a round's unknown keys: keep each key's owner (and renew it) unless
// it left the table, else set the mode's choice; the call is atomic, so two
// consumers meeting a new key at once agree on one owner. When the home
// changes (its backend is removed, or one with a smaller name is added)
// the stick table starts afresh on the new home.
package routing
