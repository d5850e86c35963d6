#!/usr/bin/env bash
# Installs (if missing) and starts the servers that the tests and the native
# demo use, on ports of their own so that they never meet the compose stack's
# (which publishes RabbitMQ on 5672/15672):
#
#   RabbitMQ  127.0.0.1:5682 (AMQP), 127.0.0.1:15682 (management), node
#             connpipe-test@localhost, a user of its own with a random password
#   Redis     127.0.0.1:6389, 6390, 6391, each holding a marker key
#   Sentinel  a primary on 127.0.0.1:6392 with a replica on 6393 (holding the
#             marker), watched by sentinels on 26392, 26393, 26394 as master
#             connpipe-ha; a test may fail it over (SENTINEL FAILOVER), so the
#             primary may be either
#
# It writes what it started to $STATE/env (URLs, the password, the marker),
# which shared/testenv reads: a test uses only servers that this script
# started, and a port that answers without the marker is an error, never
# something to borrow. Idempotent: what it started and still answers is left
# alone.
#
#   scripts/testenv.sh up      install what is missing (also Debian's prometheus, for
#                              promtool; its daemon is not started), start what is not running
#                              (CONNPIPE_BROWSER=1 also installs chromium for the
#                              admin page's browser test; CONNPIPE_TCPDUMP=1
#                              installs tcpdump for make bench-live)
#   scripts/testenv.sh down    stop what this script started
#   scripts/testenv.sh status  show what answers
#   scripts/testenv.sh path    print where the env file is
#   scripts/testenv.sh env     print the env file (the tests' addresses)
set -euo pipefail

STATE=${CONNPIPE_TESTENV_DIR:-/tmp/connpipe-testenv}
REDIS_PORTS=${CONNPIPE_TESTENV_REDIS_PORTS:-"6389 6390 6391"}
AMQP_PORT=${CONNPIPE_TESTENV_AMQP_PORT:-5682}
HA_PORTS=${CONNPIPE_TESTENV_HA_PORTS:-"6392 6393"}
SENTINEL_PORTS=${CONNPIPE_TESTENV_SENTINEL_PORTS:-"26392 26393 26394"}
HA_MASTER=connpipe-ha
MGMT_PORT=$((AMQP_PORT + 10000))
DIST_PORT=$((AMQP_PORT + 20000))
NODE=connpipe-test-$AMQP_PORT@localhost
RMQ_DIR="$STATE/rabbitmq-$AMQP_PORT"
ENV_FILE="$STATE/env"
TEST_USER=connpipe-test

log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PIDFILE: the process the file names still runs.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "testenv: need root to install $* (or install them yourself)" >&2
		exit 1
	fi
}

# apt_install installs Debian's packages "$@".
apt_install() {
	need_root "$*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps the packages' own init scripts from starting
	# servers of their own.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
	rm -f /usr/sbin/policy-rc.d
}

install_missing() {
	local pkgs=()
	command -v redis-server >/dev/null || pkgs+=(redis-server)
	command -v redis-benchmark >/dev/null || pkgs+=(redis-tools)
	command -v redis-sentinel >/dev/null || pkgs+=(redis-sentinel)
	command -v rabbitmq-server >/dev/null || pkgs+=(rabbitmq-server)
	command -v amqp-publish >/dev/null || pkgs+=(amqp-tools)
	command -v curl >/dev/null || pkgs+=(curl)
	command -v ip >/dev/null || pkgs+=(iproute2)
	command -v openssl >/dev/null || pkgs+=(openssl)
	# promtool checks and unit-tests the alerting rules (deployments/observability).
	command -v promtool >/dev/null || pkgs+=(prometheus)
	[ ${#pkgs[@]} -gt 0 ] || return 0
	log "installing ${pkgs[*]} from Debian's packages"
	apt_install "${pkgs[@]}"
}

# install_browser installs Debian's chromium (and a font for it to draw
# text with) for the admin page's browser test, only when CONNPIPE_BROWSER=1;
# without chromium that test is skipped naming chromium (and fails under CI=true).
install_browser() {
	[ "${CONNPIPE_BROWSER:-0}" = 1 ] || return 0
	local pkgs=()
	command -v chromium >/dev/null || pkgs+=(chromium)
	[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || pkgs+=(fonts-dejavu-core)
	[ ${#pkgs[@]} -gt 0 ] || return 0
	log "installing ${pkgs[*]} from Debian's packages (CONNPIPE_BROWSER=1)"
	apt_install "${pkgs[@]}"
}

# install_tcpdump installs Debian's tcpdump, the reference make bench-live
# runs beside capture, only when CONNPIPE_TCPDUMP=1.
install_tcpdump() {
	[ "${CONNPIPE_TCPDUMP:-0}" = 1 ] || return 0
	command -v tcpdump >/dev/null && return 0
	log "installing tcpdump from Debian's packages (CONNPIPE_TCPDUMP=1)"
	apt_install tcpdump
}

# secrets makes the marker and the broker password once; later runs keep them
# so servers still running keep matching the env file.
secrets() {
	mkdir -p "$STATE"
	chmod 700 "$STATE"
	[ -f "$STATE/marker" ] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/marker"
	[ -f "$STATE/password" ] || head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/password"
	chmod 600 "$STATE/marker" "$STATE/password"
	MARKER=$(cat "$STATE/marker")
	PASSWORD=$(cat "$STATE/password")
}

# start_one_redis PORT WHAT [ARGS...] starts a Redis on 127.0.0.1:PORT with
# ARGS unless the one this script started there already answers; 0 when it
# started one.
start_one_redis() {
	local p=$1 what=$2
	shift 2
	local pidf="$STATE/redis-$p.pid"
	if alive "$pidf" && [ "$(redis-cli -p "$p" GET connpipe-testenv-marker 2>/dev/null)" = "$MARKER" ]; then
		log "redis on $p ($what, started here) already answers"
		return 1
	fi
	if port_open "$p"; then
		echo "testenv: 127.0.0.1:$p answers but is not a Redis this script started; stop it or set CONNPIPE_TESTENV_REDIS_PORTS / CONNPIPE_TESTENV_HA_PORTS" >&2
		exit 1
	fi
	log "starting redis on 127.0.0.1:$p ($what)"
	redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
		--daemonize yes --pidfile "$pidf" --logfile "$STATE/redis-$p.log" \
		--dir "$STATE" --hz 10 "$@"
	for _ in $(seq 1 50); do port_open "$p" && break; sleep 0.1; done
}

start_redis() {
	for p in $REDIS_PORTS; do
		start_one_redis "$p" test || continue
		redis-cli -p "$p" SET connpipe-testenv-marker "$MARKER" >/dev/null
	done
}

# ha_primary prints the port of the group's primary (the first port when
# none answers as one yet).
ha_primary() {
	for p in $HA_PORTS; do
		if [ "$(redis-cli -p "$p" ROLE 2>/dev/null | head -1)" = master ]; then
			echo "$p"
			return
		fi
	done
	set -- $HA_PORTS
	echo "$1"
}

# start_ha starts the primary and its replica that the sentinels watch; a
# node started again joins whichever is the primary now.
start_ha() {
	local primary
	primary=$(ha_primary)
	for p in $HA_PORTS; do
		if [ "$p" = "$primary" ]; then
			start_one_redis "$p" "sentinel group" || continue
			redis-cli -p "$p" SET connpipe-testenv-marker "$MARKER" >/dev/null
		else
			start_one_redis "$p" "sentinel group, replica of $primary" --replicaof 127.0.0.1 "$primary" || true
		fi
	done
	for _ in $(seq 1 50); do
		[ "$(redis-cli -p "$(ha_primary)" INFO replication | tr -d '\r' | grep -c '^slave[0-9]*:.*state=online')" -ge 1 ] && return
		sleep 0.2
	done
	echo "testenv: the replica of 127.0.0.1:$primary did not come online" >&2
	exit 1
}

# start_sentinels starts the sentinels that are not running, watching the
# primary there is now.
start_sentinels() {
	local primary
	primary=$(ha_primary)
	for p in $SENTINEL_PORTS; do
		local pidf="$STATE/sentinel-$p.pid"
		if alive "$pidf" && [ "$(redis-cli -p "$p" PING 2>/dev/null)" = PONG ]; then
			log "sentinel on $p (started here) already answers"
			continue
		fi
		if port_open "$p"; then
			echo "testenv: 127.0.0.1:$p answers but is not a sentinel this script started; stop it or set CONNPIPE_TESTENV_SENTINEL_PORTS" >&2
			exit 1
		fi
		log "starting sentinel on 127.0.0.1:$p (master $HA_MASTER at 127.0.0.1:$primary)"
		# A sentinel rewrites its file: a fresh one each start.
		cat >"$STATE/sentinel-$p.conf" <<CONF
port $p
bind 127.0.0.1
daemonize yes
pidfile $pidf
logfile $STATE/sentinel-$p.log
dir $STATE
sentinel monitor $HA_MASTER 127.0.0.1 $primary 2
sentinel down-after-milliseconds $HA_MASTER 1000
sentinel failover-timeout $HA_MASTER 5000
sentinel parallel-syncs $HA_MASTER 1
CONF
		if command -v redis-sentinel >/dev/null; then
			redis-sentinel "$STATE/sentinel-$p.conf"
		else
			redis-server "$STATE/sentinel-$p.conf" --sentinel
		fi
		for _ in $(seq 1 50); do port_open "$p" && break; sleep 0.1; done
	done
}

rabbitmq_env() {
	export RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log"
	export RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$AMQP_PORT
	export RABBITMQ_DIST_PORT=$DIST_PORT
	export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
	export RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq"
	export HOME="$RMQ_DIR"
}

rabbitmq_ours() {
	curl -fsS -o /dev/null -u "$TEST_USER:$PASSWORD" "http://127.0.0.1:$MGMT_PORT/api/whoami" 2>/dev/null
}

start_rabbitmq() {
	local pidf="$STATE/rabbitmq-$AMQP_PORT.pid"
	if alive "$pidf" && port_open "$AMQP_PORT" && rabbitmq_ours; then
		log "rabbitmq on $AMQP_PORT (started here) already answers"
		return
	fi
	for p in "$AMQP_PORT" "$MGMT_PORT" "$DIST_PORT"; do
		if port_open "$p"; then
			echo "testenv: 127.0.0.1:$p answers but is not the RabbitMQ this script started; stop it or set CONNPIPE_TESTENV_AMQP_PORT" >&2
			exit 1
		fi
	done
	# A fresh database each start: default_user applies only to a new one,
	# and tests keep nothing between runs.
	rm -rf "$RMQ_DIR/mnesia"
	mkdir -p "$RMQ_DIR"
	rabbitmq_env
	echo '[rabbitmq_management].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
	# No default guest user: the only user is the one whose password sits in
	# the env file, so a test can tell this broker from any other.
	cat >"$RMQ_DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
default_user = $TEST_USER
default_pass = $PASSWORD
default_user_tags.administrator = true
loopback_users = none
vm_memory_high_watermark.relative = 0.3
disk_free_limit.absolute = 200MB
CONF
	log "starting rabbitmq (node $NODE, data in $RMQ_DIR)"
	# Debian's /usr/sbin wrapper switches to the rabbitmq user, who cannot
	# write to this folder; the server itself runs fine as the caller, with
	# HOME set so its Erlang cookie sits beside the data.
	nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$RMQ_DIR/stdout.log" 2>&1 &
	local pid=$!
	echo $pid >"$pidf"
	local t0=$(date +%s)
	for _ in $(seq 1 120); do
		if port_open "$AMQP_PORT" && rabbitmq_ours; then
			log "rabbitmq up after $(( $(date +%s) - t0 ))s"
			return
		fi
		kill -0 $pid 2>/dev/null || break
		sleep 1
	done
	echo "testenv: rabbitmq did not answer on $AMQP_PORT/$MGMT_PORT within 120s; log: $RMQ_DIR/stdout.log" >&2
	tail -30 "$RMQ_DIR/stdout.log" >&2 || true
	exit 1
}

write_env() {
	local redis="" sentinels=""
	for p in $REDIS_PORTS; do redis+="${redis:+,}127.0.0.1:$p"; done
	for p in $SENTINEL_PORTS; do sentinels+="${sentinels:+,}127.0.0.1:$p"; done
	umask 077
	cat >"$ENV_FILE" <<ENV
CONNPIPE_TEST_AMQP=amqp://$TEST_USER:$PASSWORD@127.0.0.1:$AMQP_PORT/
CONNPIPE_TEST_MGMT=http://$TEST_USER:$PASSWORD@127.0.0.1:$MGMT_PORT
CONNPIPE_TEST_REDIS=$redis
CONNPIPE_TEST_MARKER=$MARKER
CONNPIPE_TEST_SENTINELS=$sentinels
CONNPIPE_TEST_SENTINEL_MASTER=$HA_MASTER
ENV
	log "addresses for the tests in $ENV_FILE"
}

down() {
	for f in "$STATE"/redis-*.pid "$STATE"/sentinel-*.pid; do
		[ -f "$f" ] || continue
		kill "$(cat "$f")" 2>/dev/null && log "stopped redis $(basename "$f" .pid)"
		rm -f "$f"
	done
	for p in $REDIS_PORTS $HA_PORTS $SENTINEL_PORTS; do
		for _ in $(seq 1 40); do port_open "$p" || break; sleep 0.25; done
	done
	local pidf="$STATE/rabbitmq-$AMQP_PORT.pid"
	if [ -f "$pidf" ]; then
		local pid
		pid=$(cat "$pidf")
		(rabbitmq_env; /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" stop >/dev/null 2>&1) ||
			kill "$pid" 2>/dev/null || true
		# Wait until the node has let go of its ports, so an up right
		# after finds them free.
		for _ in $(seq 1 60); do
			kill -0 "$pid" 2>/dev/null || port_open "$DIST_PORT" || break
			sleep 0.5
		done
		for _ in $(seq 1 60); do
			port_open "$AMQP_PORT" || port_open "$DIST_PORT" || port_open "$MGMT_PORT" || break
			sleep 0.5
		done
		rm -f "$pidf"
		log "stopped rabbitmq"
	fi
	rm -f "$ENV_FILE"
}

status() {
	for p in $REDIS_PORTS $HA_PORTS $SENTINEL_PORTS $AMQP_PORT $MGMT_PORT; do
		if port_open "$p"; then echo "127.0.0.1:$p up"; else echo "127.0.0.1:$p down"; fi
	done
}

case "${1:-up}" in
up) install_missing; install_browser; install_tcpdump; secrets; start_redis; start_ha; start_sentinels; start_rabbitmq; write_env ;;
down) down ;;
status) status ;;
env) cat "$ENV_FILE" ;;
path) echo "$ENV_FILE" ;;
*) echo "usage: $0 up|down|status|env|path" >&2; exit 2 ;;
esac
