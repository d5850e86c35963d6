#!/usr/bin/env bash
# Builds the images connpipe's compose stack runs on, without pulling any
# image from a registry: a Debian bookworm root filesystem made with
# debootstrap (--variant=minbase) and imported with `docker import`, and
# three images derived from it the same way (packages installed in a chroot
# on this machine):
#
#   base      minbase bookworm, the runtime of the Go services
#   redis     base + Debian's redis-server
#   rabbitmq  base + Debian's rabbitmq-server (management plugin enabled)
#             + amqp-tools, configured by deployments/images/rabbitmq/
#   observe   base + Debian's prometheus and prometheus-alertmanager, for
#             make up OBSERVE=1 (not part of all)
#   sentinel  base + Debian's redis-sentinel, for make up HA=1 (not part of
#             all; the primaries and replicas run the redis image)
#   gobuild   base + this machine's Go toolchain (GOROOT) + a read-only
#             module proxy holding every module the workspace needs, so
#             `docker build` compiles the services with no network at all
#
# The Debian mirror is read from this machine's apt sources when the script
# runs (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and *.sources);
# no image keeps an apt source list. An image that exists is not rebuilt
# (FORCE=1 rebuilds); gobuild is tagged with a hash of the Go version and
# the workspace's go.mod/go.sum files, so a new dependency makes a new one.
#
#   deployments/images/build.sh [base|redis|rabbitmq|observe|sentinel|gobuild|all]...
#
# Prints the image names as KEY=VALUE lines on stdout (progress goes to
# stderr), e.g. REDIS_IMAGE=connpipe/redis:bookworm.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SUITE=bookworm
REPO=${IMAGE_REPO:-connpipe}
BASE_IMAGE=$REPO/base:$SUITE
REDIS_IMAGE=$REPO/redis:$SUITE
RABBITMQ_IMAGE=$REPO/rabbitmq:$SUITE
OBSERVE_IMAGE=$REPO/observe:$SUITE
SENTINEL_IMAGE=$REPO/redis-sentinel:$SUITE
GOROOT_HOST=${GOROOT_HOST:-/usr/local/go}
GO=$GOROOT_HOST/bin/go
export DOCKER_BUILDKIT=0

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }
have_image() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

# apt_sources prints "URI SUITE COMPONENTS..." for every deb source of this
# machine: one-line (.list) and deb822 (.sources) formats.
apt_sources() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] URI suite components...
		sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { $1 = ""; print }'
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && enabled != "no")
					for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j], comps
				types = ""; nu = 0; ns = 0; comps = ""; enabled = ""
			}
			/^[[:space:]]*#/ { next }
			/^[[:space:]]*$/ { flush(); next }
			{
				key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
				if (key == "types") types = $0
				else if (key == "uris") nu = split($0, u, " ")
				else if (key == "suites") ns = split($0, s, " ")
				else if (key == "components") comps = $0
				else if (key == "enabled") enabled = tolower($0)
			}
			END { flush() }' "$f"
	done
}

# mirror_for SUITE prints the URI of the first source that serves SUITE main.
mirror_for() {
	apt_sources | awk -v suite="$1" '$2 == suite && / main( |$)/ { print $1; exit }'
}

MIRROR=""
SECURITY_MIRROR=""
read_mirrors() {
	[ -n "$MIRROR" ] && return
	MIRROR=$(mirror_for "$SUITE")
	[ -n "$MIRROR" ] || die "no apt source for suite $SUITE main in /etc/apt/sources.list{,.d}; add one (the images are built from it)"
	SECURITY_MIRROR=$(mirror_for "$SUITE-security")
}

# write_sources ROOT writes a temporary apt source list into a root
# filesystem (removed again by strip_rootfs).
write_sources() {
	read_mirrors
	{
		echo "deb $MIRROR $SUITE main"
		echo "deb $MIRROR $SUITE-updates main"
		[ -n "$SECURITY_MIRROR" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
	} >"$1/etc/apt/sources.list"
}

# strip_rootfs ROOT removes what an image should not carry: the apt source
# list and indexes, caches, documentation and logs.
strip_rootfs() {
	local r=$1
	: >"$r/etc/apt/sources.list"
	rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
		"$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/var/log/* "$r"/tmp/* \
		"$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
		"$r"/usr/sbin/policy-rc.d
	# Keep the copyright files: they are the packages' licences.
}

# import ROOT IMAGE imports a root filesystem as an image.
import_rootfs() {
	tar --numeric-owner --xattrs -C "$1" -c . | docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' --change 'LABEL org.connpipe.image=true' - "$2" >/dev/null
	log "imported $2 ($(docker image inspect -f '{{.Size}}' "$2" | awk '{printf "%.0f MB", $1/1e6}'))"
}

WORK=""
cleanup() {
	[ -n "$WORK" ] || return 0
	# Unmount anything still mounted inside the work folder, then remove it.
	local m
	for m in $(grep -o " $WORK/[^ ]*" /proc/mounts | sort -r || true); do umount -l "$m" || true; done
	rm -rf "$WORK" || true
}
trap cleanup EXIT
workdir() {
	[ -n "$WORK" ] || WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/connpipe-images.XXXXXX")
}

# rootfs_from_base DIR fills DIR with the base image's files.
rootfs_from_base() {
	mkdir -p "$1"
	local c
	c=$(docker create "$BASE_IMAGE" true)
	docker export "$c" | tar --numeric-owner -x -C "$1"
	docker rm "$c" >/dev/null
}

build_base() {
	if have_image "$BASE_IMAGE"; then log "$BASE_IMAGE exists"; return; fi
	[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
	if ! command -v debootstrap >/dev/null; then
		log "installing debootstrap from Debian's packages"
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
			die "debootstrap is not installed and apt-get could not install it"
	fi
	read_mirrors
	workdir
	local r=$WORK/base
	log "debootstrap --variant=minbase $SUITE (a few minutes)"
	debootstrap --variant=minbase --arch=amd64 "$SUITE" "$r" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	# A non-root user for the services (uid/gid 10001).
	chroot "$r" groupadd --gid 10001 connpipe
	chroot "$r" useradd --uid 10001 --gid connpipe --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin connpipe
	strip_rootfs "$r"
	rm -rf "$r"/var/cache/apt/archives/partial "$r"/debootstrap
	import_rootfs "$r" "$BASE_IMAGE"
}

# install_pkgs ROOT PKG... installs Debian packages in a chroot.
install_pkgs() {
	local r=$1; shift
	write_sources "$r"
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	# Keep the packages' init scripts from starting servers in the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod +x "$r/usr/sbin/policy-rc.d"
	mount -t proc proc "$r/proc"
	local rc=0
	{
		chroot "$r" apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get install -y -qq --no-install-recommends "$@" &&
			chroot "$r" apt-get clean
	} >"$r.log" 2>&1 || rc=$?
	umount "$r/proc"
	: >"$r/etc/resolv.conf"
	[ $rc -eq 0 ] || { tail -20 "$r.log" >&2; die "apt-get install $* failed (log above)"; }
	strip_rootfs "$r"
}

build_redis() {
	if have_image "$REDIS_IMAGE"; then log "$REDIS_IMAGE exists"; return; fi
	build_base
	workdir
	local r=$WORK/redis
	rootfs_from_base "$r"
	log "installing redis-server"
	install_pkgs "$r" redis-server
	import_rootfs "$r" "$REPO/redis-rootfs:$SUITE"
	docker build -q --build-arg ROOTFS="$REPO/redis-rootfs:$SUITE" -t "$REDIS_IMAGE" "$HERE/redis" >/dev/null 2>"$WORK/build.log" ||
		{ cat "$WORK/build.log" >&2; die "building $REDIS_IMAGE failed"; }
	docker image rm "$REPO/redis-rootfs:$SUITE" >/dev/null
	log "built $REDIS_IMAGE"
}

# build_layered NAME IMAGE PKG... builds IMAGE from deployments/images/NAME
# on a root filesystem holding Debian's PKGs. The root filesystem is kept
# and reused; the image on top (configuration, entrypoint) is built every
# time, from the layer cache when nothing changed, so an edited file takes
# effect.
build_layered() {
	local name=$1 image=$2
	shift 2
	local rootfs=$REPO/$name-rootfs:$SUITE
	if have_image "$rootfs"; then
		log "$rootfs exists"
	else
		build_base
		workdir
		local r=$WORK/$name
		rootfs_from_base "$r"
		log "installing $*"
		install_pkgs "$r" "$@"
		import_rootfs "$r" "$rootfs"
	fi
	workdir
	docker build -q --build-arg ROOTFS="$rootfs" -t "$image" "$HERE/$name" >/dev/null 2>"$WORK/build.log" ||
		{ cat "$WORK/build.log" >&2; die "building $image failed"; }
	log "built $image"
}

build_rabbitmq() { build_layered rabbitmq "$RABBITMQ_IMAGE" rabbitmq-server amqp-tools; }

build_observe() { build_layered observe "$OBSERVE_IMAGE" prometheus prometheus-alertmanager; }

build_sentinel() { build_layered sentinel "$SENTINEL_IMAGE" redis-sentinel; }

# image_modules lists the modules the Dockerfiles build (GOWORK=off), as
# folders relative to the repository root.
image_modules() {
	(cd "$ROOT" && ls -d shared services/*/ tools 2>/dev/null | sed 's|/$||' | while read -r d; do
		[ -f "$d/go.mod" ] && echo "$d"
	done)
}

# The Go builder comes in two layers: the toolchain (tagged by Go version)
# and the module proxy on top (tagged by the workspace's module files).
GO_VERSION=""
GOBUILD_IMAGE=""
gobuild_tag() {
	[ -x "$GO" ] || die "no Go toolchain at $GOROOT_HOST (set GOROOT_HOST)"
	GO_VERSION=$("$GO" env GOVERSION)
	local sum
	sum=$(cd "$ROOT" && cat $(ls $(image_modules | sed 's|$|/go.mod|; p; s|go.mod$|go.sum|') 2>/dev/null) "$HERE/gobuild/Dockerfile" | sha256sum | cut -c1-12)
	GOBUILD_IMAGE=$REPO/gobuild:$GO_VERSION-$sum
}

build_gobuild() {
	gobuild_tag
	if have_image "$GOBUILD_IMAGE"; then log "$GOBUILD_IMAGE exists"; return; fi
	local toolchain=$REPO/gotoolchain:$GO_VERSION
	workdir
	if ! have_image "$toolchain"; then
		build_base
		local r=$WORK/gotoolchain
		rootfs_from_base "$r"
		log "adding the Go toolchain $GO_VERSION from $GOROOT_HOST"
		mkdir -p "$r/usr/local"
		tar -C "$(dirname "$GOROOT_HOST")" --exclude="$(basename "$GOROOT_HOST")/test" \
			--exclude="$(basename "$GOROOT_HOST")/api" --exclude="$(basename "$GOROOT_HOST")/doc" \
			-c "$(basename "$GOROOT_HOST")" | tar -C "$r/usr/local" -x
		[ "$(basename "$GOROOT_HOST")" = go ] || mv "$r/usr/local/$(basename "$GOROOT_HOST")" "$r/usr/local/go"
		import_rootfs "$r" "$toolchain"
	fi
	# Fill a module proxy folder with exactly the workspace's modules, from
	# this machine's module cache where it has them.
	log "collecting the modules of $(image_modules | tr '\n' ' ')"
	local ctx=$WORK/gobuild-ctx
	mkdir -p "$ctx/gomodcache"
	local hostcache proxy
	hostcache=$("$GO" env GOMODCACHE)
	proxy=$("$GO" env GOPROXY)
	# Each module the images build, on its own (GOWORK=off), as the
	# Dockerfiles build them.
	local dir
	for dir in $(image_modules); do
		(cd "$ROOT/$dir" && GOWORK=off GOMODCACHE="$ctx/gomodcache" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
			GOPROXY="file://$hostcache/cache/download,$proxy" "$GO" mod download >>"$WORK/moddownload.log" 2>&1) ||
			{ tail -20 "$WORK/moddownload.log" >&2; die "go mod download in $dir failed (log above)"; }
	done
	mv "$ctx/gomodcache/cache/download" "$ctx/goproxy"
	rm -rf "$ctx/gomodcache"
	cp "$HERE/gobuild/Dockerfile" "$ctx/Dockerfile"
	docker build -q --build-arg TOOLCHAIN="$toolchain" -t "$GOBUILD_IMAGE" "$ctx" >/dev/null 2>"$WORK/build.log" ||
		{ cat "$WORK/build.log" >&2; die "building $GOBUILD_IMAGE failed"; }
	log "built $GOBUILD_IMAGE ($(du -sh "$ctx/goproxy" | cut -f1) of modules)"
	# Builders for older module sets are of no further use.
	local old
	for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO/gobuild"); do
		[ "$old" = "$GOBUILD_IMAGE" ] || docker image rm "$old" >/dev/null 2>&1 || true
	done
}

emit() {
	case $1 in
	base) echo "BASE_IMAGE=$BASE_IMAGE" ;;
	redis) echo "REDIS_IMAGE=$REDIS_IMAGE" ;;
	rabbitmq) echo "RABBITMQ_IMAGE=$RABBITMQ_IMAGE" ;;
	observe) echo "OBSERVE_IMAGE=$OBSERVE_IMAGE" ;;
	sentinel) echo "SENTINEL_IMAGE=$SENTINEL_IMAGE" ;;
	gobuild) echo "GO_IMAGE=$GOBUILD_IMAGE" ;;
	esac
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(all)
for t in "${targets[@]}"; do
	case $t in
	all) for x in base redis rabbitmq gobuild; do "build_$x"; emit "$x"; done ;;
	base | redis | rabbitmq | observe | sentinel | gobuild) "build_$t"; emit "$t" ;;
	*) die "unknown image $t (base, redis, rabbitmq, observe, sentinel, gobuild, all)" ;;
	esac
done
