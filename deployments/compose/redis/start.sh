#!/bin/sh
# Starts redis-server for the compose stack with no anonymous access and
# one ACL user per role, from passwords in the environment (the env file):
#
#   connpipe-consumer  REDIS_CONSUMER_PASSWORD  reads and writes keys under
#                                               REDIS_PREFIX, runs scripts
#   connpipe-admin     REDIS_ADMIN_PASSWORD     reads them, and INFO
#
# The default user has no password at all, so no client can log in as it
# and a client that does not log in is refused (NOAUTH). It keeps every
# permission: Redis 7.0 replays the append-only file's transactions (a
# script's writes, MULTI/EXEC) with the default user's permissions, and
# refuses them, silently dropping the data, when that user may do nothing.
#
# The ACL file holds SHA-256 hashes only and lives on the container's tmpfs.
# The same script serves Debian's redis-server and the public image.
set -eu
: "${REDIS_CONSUMER_PASSWORD:?REDIS_CONSUMER_PASSWORD is not set; run make up}"
: "${REDIS_ADMIN_PASSWORD:?REDIS_ADMIN_PASSWORD is not set; run make up}"
prefix=${REDIS_PREFIX:-cp:}

hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

acl=${TMPDIR:-/tmp}/connpipe-users.acl
umask 077
cat >"$acl" <<ACL
user default on resetpass resetkeys ~* &* +@all
user connpipe-consumer on #$(hash "$REDIS_CONSUMER_PASSWORD") resetkeys ~${prefix}* resetchannels -@all +@read +@write +@scripting +@connection +@transaction -@dangerous
user connpipe-admin on #$(hash "$REDIS_ADMIN_PASSWORD") resetkeys ~${prefix}* resetchannels -@all +@read +@connection -@dangerous +info
ACL
unset REDIS_CONSUMER_PASSWORD

# REDIS_MAXMEMORY, when set, is Redis's maxmemory (the observability
# end-to-end test puts a backend at it).
if [ -n "${REDIS_MAXMEMORY:-}" ]; then set -- --maxmemory "$REDIS_MAXMEMORY" "$@"; fi

# appendonly + everysec: a write is in the kernel before Redis replies, so
# a killed (not crashed-machine) Redis keeps every record it acknowledged.
exec redis-server --aclfile "$acl" --bind 0.0.0.0 --protected-mode yes --dir /data \
	--appendonly yes --appendfsync everysec --save "" --hz 10 "$@"
