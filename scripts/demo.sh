#!/usr/bin/env bash
# The whole pipeline natively on this machine: RabbitMQ and two Redis
# servers (scripts/testenv.sh), admin, two consumers, capture on lo and a
# traffic generator sending from 200 loopback addresses. It prints the live
# split every two seconds, switches 30/70 to 50/50 halfway with the admin
# CLI, and shows the split follow. Ctrl-C stops everything.
#
# Needs root (capture opens a raw socket) and `make build` (bin/).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DEMO_SECONDS:-40}
PORT=${DEMO_PORT:-7000}
RUN=$(mktemp -d /tmp/connpipe-demo.XXXX)
# The servers and credentials that scripts/testenv.sh started and wrote down.
testenv_file=${CONNPIPE_TESTENV_DIR:-/tmp/connpipe-testenv}/env
[ -f "$testenv_file" ] || { echo "no $testenv_file: run make testenv first" >&2; exit 1; }
CONNPIPE_TEST_AMQP=$(sed -n 's/^CONNPIPE_TEST_AMQP=//p' "$testenv_file")
IFS=, read -r redis_a redis_b _ <<<"$(sed -n 's/^CONNPIPE_TEST_REDIS=//p' "$testenv_file")"
export AMQP_URL=${AMQP_URL:-$CONNPIPE_TEST_AMQP}
export BACKENDS="redis-a=$redis_a,redis-b=$redis_b" WEIGHTS="redis-a=30,redis-b=70"
export REDIS_PREFIX="demo:" RETENTION=5m LOG_FORMAT=text LOG_LEVEL=info
export ADMIN_TOKEN=${ADMIN_TOKEN:-demo-token} ADMIN_URL=http://127.0.0.1:8080
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "logs are in $RUN"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
bg() { local name=$1; shift; "$@" >"$RUN/$name.log" 2>&1 & pids+=($!); }
wait_http() {
	for _ in $(seq 1 100); do curl -fs "http://$1/healthz" >/dev/null 2>&1 && return; sleep 0.2; done
	echo "$1 did not become healthy; see $RUN" >&2; exit 1
}

say "starting admin, two consumers and capture on lo:$PORT (logs in $RUN)"
bg admin env HTTP_ADDR=127.0.0.1:8080 bin/admin serve
wait_http 127.0.0.1:8080
bin/admin weights set redis-a=30 redis-b=70 >/dev/null
bg consumer-1 env CONSUMER_ID=demo-consumer-1 METRICS_ADDR=127.0.0.1:9101 bin/consumer
bg consumer-2 env CONSUMER_ID=demo-consumer-2 METRICS_ADDR=127.0.0.1:9102 bin/consumer
wait_http 127.0.0.1:9101
wait_http 127.0.0.1:9102
bg capture env INTERFACE=lo LISTEN_ADDR=127.0.0.1:$PORT SINK=true METRICS_ADDR=127.0.0.1:9100 bin/capture
wait_http 127.0.0.1:9100
bin/admin weights get

say "traffic: 200 source addresses 127.0.1.1-127.0.1.200 for ${DURATION}s"
bg trafficgen go run ./services/capture/cmd/trafficgen -target 127.0.0.1:$PORT -sources 127.0.1.1-127.0.1.200 -rate 150 -duration "${DURATION}s"

stored() { # prints "a b": records stored on redis-a and redis-b by both consumers
	for p in 9101 9102; do curl -fs "http://127.0.0.1:$p/metrics"; done |
		awk '/^connpipe_consumer_records_stored_total\{backend="redis-a"\}/{a+=$2} /^connpipe_consumer_records_stored_total\{backend="redis-b"\}/{b+=$2} END{printf "%d %d\n", a, b}'
}
read -r pa pb < <(stored)
printf '%8s %10s %10s %8s %8s\n' time redis-a redis-b a% b%
half=$((DURATION / 2)); changed=0
for ((t = 2; t <= DURATION + 4; t += 2)); do
	sleep 2
	read -r a b < <(stored)
	da=$((a - pa)); db=$((b - pb)); pa=$a; pb=$b
	tot=$((da + db))
	if ((tot > 0)); then
		awk -v t="$t" -v a="$da" -v b="$db" 'BEGIN{printf "%7ss %10d %10d %7.1f%% %7.1f%%\n", t, a, b, 100*a/(a+b), 100*b/(a+b)}'
	else
		printf '%7ss %10d %10d\n' "$t" 0 0
	fi
	if ((t >= half && changed == 0)); then
		say "admin weights set redis-a=50 redis-b=50 --wait 5s"
		bin/admin weights set redis-a=50 redis-b=50 --wait 5s
		changed=1
	fi
done

say "admin status"
bin/admin status
say "read back: the last 5 records from 127.0.1.7"
bin/admin records --since 2m --src 127.0.1.7 --limit 5 || true
