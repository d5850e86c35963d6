#!/usr/bin/env bash
# Installs (if missing) and starts the servers the tests and the native demo
# need: RabbitMQ with the management plugin on 5672/15672 and Redis on
# 6379, 6380 and 6381. Idempotent: what already answers is left alone.
#
#   scripts/testenv.sh up      install what is missing, start what is not running
#                              (CONNPIPE_BROWSER=1 also installs chromium for the
#                              admin page's browser test)
#   scripts/testenv.sh down    stop what this script started
#   scripts/testenv.sh status  show what answers
set -euo pipefail

STATE=${CONNPIPE_TESTENV_DIR:-/tmp/connpipe-testenv}
REDIS_PORTS=${CONNPIPE_REDIS_PORTS:-"6379 6380 6381"}
AMQP_PORT=5672
MGMT_PORT=15672

log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_missing() {
	local pkgs=()
	command -v redis-server >/dev/null || pkgs+=(redis-server)
	command -v redis-benchmark >/dev/null || pkgs+=(redis-tools)
	command -v rabbitmq-server >/dev/null || pkgs+=(rabbitmq-server)
	command -v amqp-publish >/dev/null || pkgs+=(amqp-tools)
	command -v curl >/dev/null || pkgs+=(curl)
	command -v ip >/dev/null || pkgs+=(iproute2)
	if [ ${#pkgs[@]} -gt 0 ]; then
		log "installing ${pkgs[*]} from Debian's packages"
		if [ "$(id -u)" -ne 0 ]; then
			echo "testenv: need root to install ${pkgs[*]} (or install them yourself)" >&2
			exit 1
		fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# policy-rc.d keeps the packages' own init scripts from starting
		# servers on the ports this script manages.
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
		apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
		rm -f /usr/sbin/policy-rc.d
	fi
}

# install_browser installs Debian's chromium (and a font for it to draw
# text with) for the admin page's browser test, only when CONNPIPE_BROWSER=1;
# without chromium that test is skipped (and fails under CI=true).
install_browser() {
	[ "${CONNPIPE_BROWSER:-0}" = 1 ] || return 0
	local pkgs=()
	command -v chromium >/dev/null || pkgs+=(chromium)
	[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || pkgs+=(fonts-dejavu-core)
	[ ${#pkgs[@]} -gt 0 ] || return 0
	log "installing ${pkgs[*]} from Debian's packages (CONNPIPE_BROWSER=1)"
	if [ "$(id -u)" -ne 0 ]; then
		echo "testenv: need root to install ${pkgs[*]} (or install them yourself)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

start_redis() {
	mkdir -p "$STATE"
	for p in $REDIS_PORTS; do
		if port_open "$p"; then
			log "redis on $p already answers"
			continue
		fi
		log "starting redis on 127.0.0.1:$p"
		redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
			--daemonize yes --pidfile "$STATE/redis-$p.pid" --logfile "$STATE/redis-$p.log" \
			--dir "$STATE" --hz 10
	done
}

start_rabbitmq() {
	if port_open "$AMQP_PORT" && port_open "$MGMT_PORT"; then
		log "rabbitmq already answers on $AMQP_PORT and $MGMT_PORT"
		return
	fi
	mkdir -p "$STATE/rabbitmq"
	export RABBITMQ_MNESIA_BASE="$STATE/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$STATE/rabbitmq/log"
	export RABBITMQ_NODENAME=connpipe@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/rabbitmq/enabled_plugins"
	export RABBITMQ_CONFIG_FILE="$STATE/rabbitmq/rabbitmq"
	echo '[rabbitmq_management].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
	cat >"$STATE/rabbitmq/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
loopback_users = none
vm_memory_high_watermark.relative = 0.3
disk_free_limit.absolute = 200MB
CONF
	log "starting rabbitmq (node connpipe@localhost, data in $STATE/rabbitmq)"
	# Debian's /usr/sbin wrapper switches to the rabbitmq user, who cannot
	# write to this folder; the server itself runs fine as the caller, with
	# HOME set so its Erlang cookie sits beside the data.
	HOME="$STATE/rabbitmq" nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$STATE/rabbitmq/stdout.log" 2>&1 &
	local pid=$!
	echo $pid >"$STATE/rabbitmq.pid"
	for i in $(seq 1 120); do
		if port_open "$AMQP_PORT" && port_open "$MGMT_PORT"; then
			log "rabbitmq up after ${i}s"
			return
		fi
		kill -0 $pid 2>/dev/null || break
		sleep 1
	done
	echo "testenv: rabbitmq did not open $AMQP_PORT/$MGMT_PORT within 120s; log: $STATE/rabbitmq/stdout.log" >&2
	tail -30 "$STATE/rabbitmq/stdout.log" >&2 || true
	exit 1
}

down() {
	for f in "$STATE"/redis-*.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null && log "stopped redis $(basename "$f" .pid)"
		rm -f "$f"
	done
	if [ -f "$STATE/rabbitmq.pid" ]; then
		HOME="$STATE/rabbitmq" RABBITMQ_NODENAME=connpipe@localhost /usr/lib/rabbitmq/bin/rabbitmqctl stop >/dev/null 2>&1 ||
			kill "$(cat "$STATE/rabbitmq.pid")" 2>/dev/null || true
		rm -f "$STATE/rabbitmq.pid"
		log "stopped rabbitmq"
	fi
}

status() {
	for p in $REDIS_PORTS $AMQP_PORT $MGMT_PORT; do
		if port_open "$p"; then echo "127.0.0.1:$p up"; else echo "127.0.0.1:$p down"; fi
	done
}

case "${1:-up}" in
up) install_missing; install_browser; start_redis; start_rabbitmq ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
