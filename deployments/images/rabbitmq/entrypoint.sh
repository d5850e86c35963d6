#!/bin/bash
# Creates the default (management) user from RABBITMQ_DEFAULT_USER /
# RABBITMQ_DEFAULT_PASS (applied by RabbitMQ when it initialises a fresh
# node; an existing node keeps its users), runs the server, and once it has
# booted creates or updates one user per role of /etc/rabbitmq/roles,
# connpipe-<role>, with the password in RABBITMQ_<ROLE>_PASSWORD and that
# role's permissions (a role without a password is skipped). The file
# /tmp/connpipe-users-ready says they are in place (the healthcheck reads it).
#
# For a cluster: RABBITMQ_ERLANG_COOKIE, when set, becomes the node's Erlang
# cookie, which every node of a cluster and every rabbitmqctl talking to it
# must share. (RabbitMQ reads /etc/rabbitmq/conf.d/*.conf after the file
# below, so peer discovery can be mounted there.)
set -euo pipefail
conf=/var/lib/rabbitmq/rabbitmq.conf
cp /etc/rabbitmq/rabbitmq.conf "$conf"
if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
	cookie=$HOME/.erlang.cookie
	rm -f "$cookie"
	(umask 077 && printf '%s' "$RABBITMQ_ERLANG_COOKIE" >"$cookie")
	chmod 400 "$cookie"
fi
unset RABBITMQ_ERLANG_COOKIE
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
	[ -n "${RABBITMQ_DEFAULT_PASS:-}" ] || { echo "rabbitmq: RABBITMQ_DEFAULT_PASS is empty" >&2; exit 1; }
	printf 'default_user = %s\ndefault_pass = %s\n' "$RABBITMQ_DEFAULT_USER" "$RABBITMQ_DEFAULT_PASS" >>"$conf"
fi
export RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/rabbitmq
unset RABBITMQ_DEFAULT_USER RABBITMQ_DEFAULT_PASS
rm -f /tmp/connpipe-users-ready

"$@" &
server=$!
trap 'kill -TERM $server 2>/dev/null' TERM INT

# ctl runs rabbitmqctl quietly: its error output would repeat the command
# line, passwords included, so a failure is reported without it; and it
# must not read the roles file the loop below is reading from stdin.
ctl() { rabbitmqctl -q "$@" </dev/null >/dev/null 2>&1; }

roles() {
	# The node answers list_users only once the rabbit app runs.
	local i
	for i in $(seq 1 180); do
		ctl list_users && break
		kill -0 $server 2>/dev/null || return 1
		sleep 1
	done
	ctl list_users || { echo "rabbitmq: the node did not start within 180s" >&2; return 1; }
	local role configure write read var pass user
	while read -r role configure write read; do
		case "$role" in '' | '#'*) continue ;; esac
		var="RABBITMQ_$(echo "$role" | tr a-z A-Z)_PASSWORD"
		pass=${!var:-}
		if [ -z "$pass" ]; then
			echo "rabbitmq: no $var: user connpipe-$role not created" >&2
			continue
		fi
		user=connpipe-$role
		if rabbitmqctl -q list_users </dev/null 2>/dev/null | awk '{print $1}' | grep -qx "$user"; then
			ctl change_password "$user" "$pass" || { echo "rabbitmq: could not set the password of $user" >&2; return 1; }
		else
			ctl add_user "$user" "$pass" || { echo "rabbitmq: could not create $user" >&2; return 1; }
		fi
		ctl set_permissions -p / "$user" "$configure" "$write" "$read" ||
			{ echo "rabbitmq: could not set the permissions of $user" >&2; return 1; }
		echo "rabbitmq: user $user: configure $configure write $write read $read" >&2
	done </etc/rabbitmq/roles
	# The bound of conn.records (shared/topology: RecordsPolicy), as a
	# policy so a queue declared before it takes it too: past it the broker
	# nacks new records (capture keeps them) instead of raising an alarm.
	local max=${RECORDS_MAX_BYTES:-1073741824}
	case "$max" in '' | *[!0-9]*) echo "rabbitmq: RECORDS_MAX_BYTES=$max: want a number of bytes" >&2; return 1 ;; esac
	ctl set_policy --apply-to queues connpipe-records '^conn\.records$' "{\"max-length-bytes\":$max,\"overflow\":\"reject-publish\"}" ||
		{ echo "rabbitmq: could not set the policy connpipe-records" >&2; return 1; }
	echo "rabbitmq: policy connpipe-records: conn.records holds at most $max bytes, then rejects publishes" >&2
	touch /tmp/connpipe-users-ready
}
if ! roles; then
	echo "rabbitmq: could not create the role users; stopping" >&2
	kill -TERM $server
fi
for v in $(compgen -e | grep '^RABBITMQ_.*_PASSWORD$'); do unset "$v"; done
wait $server
