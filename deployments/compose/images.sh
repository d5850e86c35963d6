#!/usr/bin/env bash
# Builds every image of the compose stack without a registry and writes
# their names into the compose env file:
#
#   deployments/compose/images.sh [ENV_FILE]    (default deployments/compose/.env)
#
# Base, Redis, RabbitMQ and the Go builder come from deployments/images/build.sh
# (debootstrap; cached: an existing image is kept); the services and the
# traffic generator are built from their Dockerfiles with that builder and
# base, with no network. OBSERVE=1 also builds Prometheus and Alertmanager,
# HA=1 Redis Sentinel.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENV_FILE=${1:-$HERE/.env}
REPO=${IMAGE_REPO:-connpipe}
TAG=${IMAGE_TAG:-latest}
export DOCKER_BUILDKIT=0

t0=$(date +%s)
step() { printf '[images %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(($(date +%s) - t0))" "$*" >&2; }

step "base images (debootstrap, Redis, RabbitMQ, Go builder)"
vars=$("$ROOT/deployments/images/build.sh" all)
eval "$vars" # BASE_IMAGE, REDIS_IMAGE, RABBITMQ_IMAGE, GO_IMAGE
if [ -n "${OBSERVE:-}" ]; then
	step "Prometheus and Alertmanager (OBSERVE=1)"
	vars+=$'\n'"$("$ROOT/deployments/images/build.sh" observe)"
fi
if [ -n "${HA:-}" ]; then
	step "Redis Sentinel (HA=1)"
	vars+=$'\n'"$("$ROOT/deployments/images/build.sh" sentinel)"
fi

build() { # NAME DOCKERFILE [TARGET]
	local name=$1 dockerfile=$2 image=$REPO/$1:$TAG log target=()
	[ -z "${3:-}" ] || target=(--target "$3")
	step "$image"
	log=$(mktemp)
	# The build stage is tagged too: an untagged stage is a dangling image,
	# which the prune below would take, and with it the layer cache.
	if ! { docker build --network none --force-rm -f "$ROOT/$dockerfile" \
		--build-arg GO_IMAGE="$GO_IMAGE" --build-arg BASE_IMAGE="$BASE_IMAGE" \
		--target build -t "$REPO/build-cache:$name" "$ROOT" &&
		docker build --network none --force-rm -f "$ROOT/$dockerfile" \
			--build-arg GO_IMAGE="$GO_IMAGE" --build-arg BASE_IMAGE="$BASE_IMAGE" \
			"${target[@]}" -t "$image" "$ROOT"; } >"$log" 2>&1; then
		grep -v -e DEPRECATED -e 'BuildKit is currently disabled' -e 'environment-variable\.' "$log" | tail -30 >&2
		rm -f "$log"
		echo "images: building $image failed (output above)" >&2
		exit 1
	fi
	rm -f "$log"
	vars+=$'\n'"$(echo "$name" | tr a-z A-Z)_IMAGE=$image"
}
build capture services/Dockerfile capture
build consumer services/Dockerfile consumer
build admin services/Dockerfile admin
build trafficgen deployments/compose/trafficgen/Dockerfile

# Build stages of earlier sources are of no further use; the current ones
# stay as the layer cache (prune keeps images that others derive from).
docker image prune -f --filter label=org.connpipe.image=true >/dev/null

[ -f "$ENV_FILE" ] || "$HERE/env.sh" init "$ENV_FILE"
# shellcheck disable=SC2086
"$HERE/env.sh" set "$ENV_FILE" $vars
step "done; image names written to $ENV_FILE"
echo "$vars"
