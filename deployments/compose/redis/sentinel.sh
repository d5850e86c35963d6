#!/bin/sh
# Starts redis-sentinel for one group of the compose stack with
# make up HA=1 (deployments/compose/ha.yml): a primary, its replica and
# three sentinels, watched under the master name SENTINEL_MASTER and found
# first at SENTINEL_PRIMARY (the primary's service name).
#
# The sentinels serve no anonymous client either. Their users:
#
#   connpipe-sentinel  REDIS_SENTINEL_PASSWORD  the sentinels' own user, on
#                                               the servers and on each other
#   connpipe-consumer  REDIS_CONSUMER_PASSWORD  ask where the primary is and
#   connpipe-admin     REDIS_ADMIN_PASSWORD     follow its changes; nothing
#                                               that changes the group
#
# A group fails over when two of its three sentinels (the quorum) have not
# heard from the primary for SENTINEL_DOWN_AFTER milliseconds. Every
# address is a service name (resolve-hostnames, announce-hostnames; a
# sentinel announces itself by its hostname, which compose sets to its
# service name), so the clients are given names that BACKEND_ALLOW can
# list, and a server that comes back with another address is still the
# one the sentinels know.
#
# Sentinel rewrites its configuration as it learns the group, so the file
# lives on the container's tmpfs; a restarted sentinel starts from the
# primary it was given and learns the current one from the others.
set -eu
: "${SENTINEL_MASTER:?SENTINEL_MASTER is not set: the master name the group is watched under}"
: "${SENTINEL_PRIMARY:?SENTINEL_PRIMARY is not set: the service name of the group's first primary}"
: "${REDIS_SENTINEL_PASSWORD:?REDIS_SENTINEL_PASSWORD is not set; run make up HA=1}"
: "${REDIS_CONSUMER_PASSWORD:?REDIS_CONSUMER_PASSWORD is not set; run make up HA=1}"
: "${REDIS_ADMIN_PASSWORD:?REDIS_ADMIN_PASSWORD is not set; run make up HA=1}"
down_after=${SENTINEL_DOWN_AFTER:-2000}
failover_timeout=${SENTINEL_FAILOVER_TIMEOUT:-10000}

hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# What a client of the group needs: the primary's address, the group's
# members and the channel that announces a failover (+switch-master).
client="allchannels -@all +ping +hello +auth +client|setname +client|getname +client|id +subscribe +psubscribe +unsubscribe +punsubscribe +role +info +sentinel|get-master-addr-by-name +sentinel|master +sentinel|masters +sentinel|replicas +sentinel|slaves +sentinel|sentinels +sentinel|ckquorum +sentinel|myid"

conf=${TMPDIR:-/tmp}/sentinel.conf
umask 077
cat >"$conf" <<CONF
port 26379
bind 0.0.0.0
dir ${TMPDIR:-/tmp}
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $(hostname)
user default off
user connpipe-sentinel on #$(hash "$REDIS_SENTINEL_PASSWORD") allchannels +@all
user connpipe-consumer on #$(hash "$REDIS_CONSUMER_PASSWORD") $client
user connpipe-admin on #$(hash "$REDIS_ADMIN_PASSWORD") $client
sentinel sentinel-user connpipe-sentinel
sentinel sentinel-pass $REDIS_SENTINEL_PASSWORD
sentinel monitor $SENTINEL_MASTER $SENTINEL_PRIMARY 6379 2
sentinel auth-user $SENTINEL_MASTER connpipe-sentinel
sentinel auth-pass $SENTINEL_MASTER $REDIS_SENTINEL_PASSWORD
sentinel down-after-milliseconds $SENTINEL_MASTER $down_after
sentinel failover-timeout $SENTINEL_MASTER $failover_timeout
sentinel parallel-syncs $SENTINEL_MASTER 1
CONF
unset REDIS_SENTINEL_PASSWORD REDIS_CONSUMER_PASSWORD REDIS_ADMIN_PASSWORD
exec redis-sentinel "$conf"
