#!/bin/bash
# Creates the default (management) user from RABBITMQ_DEFAULT_USER /
# RABBITMQ_DEFAULT_PASS (applied by RabbitMQ when it initialises a fresh
# node; an existing node keeps its users), runs the server, and once it has
# booted creates or updates one user per role of /etc/rabbitmq/roles,
# connpipe-<role>, with the password in RABBITMQ_<ROLE>_PASSWORD and that
# role's permissions (a role without a password is skipped). The file
# /tmp/connpipe-users-ready says they are in place (the healthcheck reads it).
set -euo pipefail
conf=/var/lib/rabbitmq/rabbitmq.conf
cp /etc/rabbitmq/rabbitmq.conf "$conf"
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

roles() {
	rabbitmqctl -q await_startup >/dev/null
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
		if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$user"; then
			rabbitmqctl -q change_password "$user" "$pass" >/dev/null
		else
			rabbitmqctl -q add_user "$user" "$pass" >/dev/null
		fi
		rabbitmqctl -q set_permissions -p / "$user" "$configure" "$write" "$read" >/dev/null
		echo "rabbitmq: user $user: configure $configure write $write read $read" >&2
	done </etc/rabbitmq/roles
	touch /tmp/connpipe-users-ready
}
if ! roles; then
	echo "rabbitmq: could not create the role users" >&2
	kill -TERM $server
fi
for v in $(compgen -e | grep '^RABBITMQ_.*_PASSWORD$'); do unset "$v"; done
wait $server
