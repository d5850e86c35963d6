// Package e2e is the end-to-end test of connpipe's compose stack: images
// built offline, every service healthy, the 30/70 split read back from
// Redis, weights changed at runtime by the admin CLI and by a hand-published
// control message, consumers scaled to three, RabbitMQ restarted and a Redis
// killed without losing a confirmed record, and nothing left behind.
//
// It needs a Docker engine and takes minutes, so it sits behind the e2e
// build tag:
//
//	make e2e
//	go test -tags e2e -count=1 -v -timeout 30m ./deployments/compose/e2e
//
// The other stacks have a build tag and a project of their own each:
// cluster (make e2e-cluster), mirror (make e2e-mirror), observe (make
// e2e-observe) and ha (make e2e-ha: redis-a's primary killed under traffic
// with each Redis backend a Sentinel group).
//
// Environment:
//
//	CONNPIPE_E2E_PROJECT  compose project name (default connpipe-e2e)
//	CONNPIPE_E2E_FRESH    1: remove connpipe's images first, to time a build
//	                      from a clean state
//	CONNPIPE_E2E_KEEP     1: leave the stack running when the test fails
//	COMPOSE               the compose command (default: "docker compose" when
//	                      it answers, else docker-compose)
package e2e
