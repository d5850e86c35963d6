#!/bin/bash
# Creates the default user from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS
# (applied by RabbitMQ when it initialises a fresh node; an existing node
# keeps its users) and runs the server in the foreground.
set -euo pipefail
conf=/var/lib/rabbitmq/rabbitmq.conf
cp /etc/rabbitmq/rabbitmq.conf "$conf"
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
	[ -n "${RABBITMQ_DEFAULT_PASS:-}" ] || { echo "rabbitmq: RABBITMQ_DEFAULT_PASS is empty" >&2; exit 1; }
	printf 'default_user = %s\ndefault_pass = %s\n' "$RABBITMQ_DEFAULT_USER" "$RABBITMQ_DEFAULT_PASS" >>"$conf"
fi
export RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/rabbitmq
unset RABBITMQ_DEFAULT_USER RABBITMQ_DEFAULT_PASS
exec "$@"
