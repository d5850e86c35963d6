#!/usr/bin/env bash
# Makes `docker compose` (Compose v2) answer when it does not: builds the CLI
# plugin from the Go module proxy and installs it where the Docker CLI looks
# for plugins. Does nothing when `docker compose version` already works.
#
#   scripts/compose-v2.sh            install if missing
#   COMPOSE_V2_VERSION=v2.40.3       the version to build (default)
#   COMPOSE_V2_DIR=/usr/local/lib/docker/cli-plugins   where to install
#
# `go install` refuses the module (its go.mod has exclude directives), so the
# script downloads the module and builds ./cmd inside its own directory, with
# the module's own go.mod and go.sum. The first build takes about 6 minutes on
# 2 cores; the Go build cache makes later ones quick.
set -euo pipefail

VERSION=${COMPOSE_V2_VERSION:-v2.40.3}
DEST=${COMPOSE_V2_DIR:-/usr/local/lib/docker/cli-plugins}
GO=${GO:-go}

log() { printf '[compose-v2 %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if docker compose version >/dev/null 2>&1; then
	log "$(docker compose version) already answers"
	exit 0
fi
command -v "$GO" >/dev/null || { echo "compose-v2: go is not on PATH (needed to build Compose v2)" >&2; exit 1; }

start=$(date +%s)
log "downloading github.com/docker/compose/v2@$VERSION from the Go module proxy"
dir=$(cd /tmp && GOFLAGS=-mod=mod "$GO" mod download -json "github.com/docker/compose/v2@$VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -d "$dir" ] || { echo "compose-v2: go mod download gave no directory for $VERSION" >&2; exit 1; }

mkdir -p "$DEST"
log "building the docker-compose plugin (about 6 minutes on 2 cores the first time)"
(cd "$dir" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod "$GO" build -trimpath \
	-ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$VERSION" \
	-o "$DEST/docker-compose.tmp" ./cmd)
mv "$DEST/docker-compose.tmp" "$DEST/docker-compose"
log "installed $DEST/docker-compose in $(( $(date +%s) - start ))s: $(docker compose version)"
