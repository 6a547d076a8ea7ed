#!/usr/bin/env bash
# Makes, without any registry, local stand-ins for the public images the deployment
# uses, from this machine's apt sources (mmdebstrap, Debian bookworm):
#   $PREFIX/python:<hash>    python3, python3-venv         (for python:3.11-slim-bookworm)
#   $PREFIX/node-base:<hash> + r-base-core, r-cran-jsonlite (for debian:bookworm-slim + R)
#   $PREFIX/redis:<hash>     redis-server, as `redis:7` is used by the compose file
#   $PREFIX/postgres:<hash>  PostgreSQL 15 with an entry point taking POSTGRES_USER,
#                            POSTGRES_PASSWORD(_FILE), POSTGRES_DB as `postgres:16` does
# Redis and PostgreSQL share one root file system (both packages): every mmdebstrap
# installs a whole Debian base first, so one for the two halves their cost; each image
# only runs its own server.
# <hash> is a hash of what makes the image (packages, this directory's files), so an
# image is made once and found again on later runs. Set PY_BASE, NODE_BASE to existing
# images to use them instead of making those two (the deployment test gives the base
# scripts/ensure-docker.sh makes, which holds both Python and R: one mmdebstrap instead
# of three on a fresh machine). Needs root (mmdebstrap) and a Docker daemon.
# Prints NAME=image lines (PY_BASE_IMAGE, NODE_BASE_IMAGE, REDIS_IMAGE, POSTGRES_IMAGE).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-dsgw-local}
SUITE=${SUITE:-bookworm}
say() { echo "make-bases: $*" >&2; }

command -v mmdebstrap >/dev/null || { say "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }

stamp=$(cat "$HERE"/* | sha256sum | cut -c1-12)
have() { docker image inspect "$1" >/dev/null 2>&1; }

rootfs() {  # rootfs NAME PACKAGES: NAME-rootfs:<stamp> imported from mmdebstrap
    local name=$1 packages=$2 image tmp
    image="$PREFIX/$name-rootfs:$stamp"
    have "$image" && return 0
    tmp=$(mktemp -d)
    say "mmdebstrap $SUITE with $packages"
    if ! mmdebstrap --quiet --variant=apt --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$tmp/rootfs.tar" >"$tmp/log" 2>&1; then
        tail -20 "$tmp/log" >&2
        rm -rf "$tmp"
        say "mmdebstrap failed for $name"
        return 1
    fi
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        "$tmp/rootfs.tar" "$image" >/dev/null
    rm -rf "$tmp"
}

# The root file systems, made side by side (mostly waiting on dpkg and the disk).
pids=()
if [ -z "${PY_BASE:-}" ]; then rootfs python python3,python3-venv & pids+=($!); fi
if [ -z "${NODE_BASE:-}" ]; then
    rootfs node-base python3,python3-venv,r-base-core,r-cran-jsonlite & pids+=($!)
fi
rootfs services redis-server,postgresql & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done

finish() {  # finish NAME ROOTFS DOCKERFILE|-: the final image FROM a root file system
    local name=$1 rootfs="$PREFIX/$2-rootfs:$stamp" dockerfile=$3 image="$PREFIX/$1:$stamp"
    if ! have "$image"; then
        if [ "$dockerfile" = - ]; then
            docker tag "$rootfs" "$image"
        else
            docker build -q -f "$HERE/$dockerfile" \
                --build-arg "BASE_IMAGE=$rootfs" -t "$image" "$HERE" >/dev/null
        fi
    fi
    echo "$image"
}

if [ -n "${PY_BASE:-}" ]; then
    echo "PY_BASE_IMAGE=$PY_BASE"
else
    echo "PY_BASE_IMAGE=$(finish python python -)"
fi
if [ -n "${NODE_BASE:-}" ]; then
    echo "NODE_BASE_IMAGE=$NODE_BASE"
else
    echo "NODE_BASE_IMAGE=$(finish node-base node-base -)"
fi
echo "REDIS_IMAGE=$(finish redis services redis.Dockerfile)"
echo "POSTGRES_IMAGE=$(finish postgres services postgres.Dockerfile)"
