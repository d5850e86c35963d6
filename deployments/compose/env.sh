#!/usr/bin/env bash
# Manages deployments/compose/.env, the file compose reads its settings,
# secrets and image names from.
#
#   env.sh init [FILE]          create FILE (default deployments/compose/.env)
#                               from connpipe.env.example when it is absent:
#                               random secrets, free host ports; for the
#                               default file, also link ./.env at the root to
#                               it, for plain `docker compose` commands
#   env.sh set FILE KEY=VALUE...  set keys in FILE (replace or append)
#   env.sh get FILE KEY         print a key's value
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DEFAULT=$HERE/.env

secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p=$1
	while port_taken "$p"; do p=$((p + 1)); done
	echo "$p"
}

get() {
	local file=$1 key=$2
	sed -n "s/^$key=//p" "$file" | tail -1
}

set_keys() {
	local file=$1; shift
	local kv key tmp
	for kv in "$@"; do
		key=${kv%%=*}
		tmp=$(mktemp "$file.XXXXXX")
		if grep -q "^$key=" "$file"; then
			awk -v k="$key" -v line="$kv" 'index($0, k "=") == 1 { print line; next } { print }' "$file" >"$tmp"
		else
			cat "$file" >"$tmp"
			printf '%s\n' "$kv" >>"$tmp"
		fi
		chmod 600 "$tmp"
		mv "$tmp" "$file"
	done
}

# link_root makes the repository root's .env a link to the default file,
# so plain `docker compose ...` in the root (which reads ./.env) gets the
# same settings, secrets, image names and project name as make.
link_root() {
	local root link
	root=$(cd "$HERE/../.." && pwd)
	link=$root/.env
	if [ -L "$link" ] && [ "$(readlink "$link")" = deployments/compose/.env ]; then
		return
	fi
	if [ -e "$link" ] || [ -L "$link" ]; then
		echo "note: $link is not a link to deployments/compose/.env; plain docker compose reads it, make reads deployments/compose/.env" >&2
		return
	fi
	ln -s deployments/compose/.env "$link"
}

# SECRETS are generated when empty; a file written by an older release
# gets the ones it lacks on the next init.
SECRETS="RABBITMQ_PASSWORD RABBITMQ_ADMIN_PASSWORD RABBITMQ_CONSUMER_PASSWORD RABBITMQ_CAPTURE_PASSWORD RABBITMQ_OPERATOR_PASSWORD REDIS_CONSUMER_PASSWORD REDIS_ADMIN_PASSWORD REDIS_REPLICA_PASSWORD REDIS_SENTINEL_PASSWORD ADMIN_TOKEN RABBITMQ_ERLANG_COOKIE"

# LATER_PORTS are host ports a file written by an older release may lack.
LATER_PORTS="PROMETHEUS_PORT ALERTMANAGER_PORT"

init() {
	local file=${1:-$DEFAULT}
	[ "$file" != "$DEFAULT" ] || link_root
	local k
	if [ -f "$file" ]; then
		for k in $SECRETS; do
			if [ -z "$(get "$file" "$k")" ]; then
				set_keys "$file" "$k=$(secret)"
				echo "added $k to $file" >&2
			fi
		done
		# Ports added by a later release (make up OBSERVE=1).
		for k in $LATER_PORTS; do
			if [ -z "$(get "$file" "$k")" ]; then
				set_keys "$file" "$k=$(free_port "$(get "$HERE/connpipe.env.example" "$k")")"
				echo "added $k to $file" >&2
			fi
		done
		return
	fi
	install -m 600 "$HERE/connpipe.env.example" "$file"
	for k in $SECRETS; do
		[ -n "$(get "$file" "$k")" ] || set_keys "$file" "$k=$(secret)"
	done
	local want got
	for k in ADMIN_PORT AMQP_PORT RABBITMQ_MGMT_PORT $LATER_PORTS; do
		want=$(get "$file" "$k")
		got=$(free_port "$want")
		if [ "$got" != "$want" ]; then
			echo "127.0.0.1:$want is taken; $k=$got" >&2
			set_keys "$file" "$k=$got"
		fi
	done
	echo "wrote $file (secrets generated; edit it to change settings)" >&2
}

case "${1:-}" in
init) shift; init "$@" ;;
set) shift; f=$1; shift; set_keys "$f" "$@" ;;
get) get "$2" "$3" ;;
*) echo "usage: $0 init [FILE] | set FILE KEY=VALUE... | get FILE KEY" >&2; exit 2 ;;
esac
