#!/bin/sh
# Starts redis-server for the compose stack with no anonymous access and
# one ACL user per role, from passwords in the environment (the env file):
#
#   connpipe-consumer  REDIS_CONSUMER_PASSWORD  reads and writes keys under
#                                               REDIS_PREFIX, runs scripts
#   connpipe-admin     REDIS_ADMIN_PASSWORD     reads them, and INFO
#
# With make up HA=1 (deployments/compose/ha.yml) two more, for the group of
# a primary, its replica and three sentinels:
#
#   connpipe-replica   REDIS_REPLICA_PASSWORD   a replica's link to its
#                                               primary (PSYNC, REPLCONF)
#   connpipe-sentinel  REDIS_SENTINEL_PASSWORD  what Sentinel sends to watch
#                                               the group and fail it over
#
# and every server of the group logs in to its primary as connpipe-replica
# (masteruser/masterauth, in a file on the tmpfs, not on the command line),
# announces itself by its service name (REDIS_ANNOUNCE_HOST), so that the
# sentinels find it again after it restarts with another address, and a
# replica starts as one of REDIS_REPLICA_OF. A primary that comes back
# after a failover starts as a primary and a sentinel turns it into a
# replica of the new one.
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
if [ -n "${REDIS_REPLICA_PASSWORD:-}" ]; then
	: "${REDIS_SENTINEL_PASSWORD:?REDIS_SENTINEL_PASSWORD is not set; run make up HA=1}"
	: "${REDIS_ANNOUNCE_HOST:?REDIS_ANNOUNCE_HOST is not set: the service name the sentinels know this server by}"
	# The permissions Redis's documentation gives each of the two roles.
	cat >>"$acl" <<ACL
user connpipe-replica on #$(hash "$REDIS_REPLICA_PASSWORD") -@all +psync +replconf +ping
user connpipe-sentinel on #$(hash "$REDIS_SENTINEL_PASSWORD") allchannels -@all +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill
ACL
	repl=${TMPDIR:-/tmp}/connpipe-replication.conf
	{
		echo "masteruser connpipe-replica"
		echo "masterauth $REDIS_REPLICA_PASSWORD"
		echo "replica-announce-ip $REDIS_ANNOUNCE_HOST"
		if [ -n "${REDIS_REPLICA_OF:-}" ]; then echo "replicaof $REDIS_REPLICA_OF 6379"; fi
	} >"$repl"
	# A configuration file must come first on redis-server's command line.
	set -- "$repl" "$@"
fi
unset REDIS_CONSUMER_PASSWORD REDIS_ADMIN_PASSWORD REDIS_REPLICA_PASSWORD REDIS_SENTINEL_PASSWORD

# REDIS_MAXMEMORY, when set, is Redis's maxmemory (the observability
# end-to-end test puts a backend at it).
if [ -n "${REDIS_MAXMEMORY:-}" ]; then set -- "$@" --maxmemory "$REDIS_MAXMEMORY"; fi

# appendonly + everysec: a write is in the kernel before Redis replies, so
# a killed (not crashed-machine) Redis keeps every record it acknowledged.
exec redis-server "$@" --aclfile "$acl" --bind 0.0.0.0 --protected-mode yes --dir /data \
	--appendonly yes --appendfsync everysec --save "" --hz 10
