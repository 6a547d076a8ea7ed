#!/usr/bin/env bash
# Makes sure a Docker daemon answers and the local base images of the client-image tests
# exist; does nothing that is already done (the e2e tests run it from a session fixture):
#   1. `docker` (docker.io) and `mmdebstrap` installed (apt, only when missing);
#   2. a daemon on $DOCKER_HOST (default unix:///run/docker-test.sock); when nothing
#      answers there, start one as docs/client-images.md explains (no iptables, no default
#      bridge, overlay2, its own data root), logging to $DSG_DOCKER_STATE/dockerd.log;
#   3. ONE base image made with mmdebstrap from this machine's apt sources (no registry),
#      holding python3, python3-venv, r-base-core, r-cran-httr and r-cran-jsonlite, and
#      tagged twice:
#        dsgateway-test/base-python:bookworm  (the Python client image, the probes)
#        dsgateway-test/base-r:bookworm       (the R client image; the deployment test's
#                                              Python and node bases, docker/offline)
#      One root file system instead of three (Python, R, and the deployment's node base)
#      is most of a fresh machine's Docker set-up time. Built only when missing or made
#      from another package list (a label records it); `DSG_REBUILD_BASES=1` rebuilds it.
# One run at a time (a lock file): a second waits for the first, then finds everything
# done. `make test` starts it in the background before pytest (scripts/prepare-docker.sh).
# Prints `DOCKER_HOST=...` as its last line. Exits non-zero, saying why, when Docker
# cannot run here.
set -euo pipefail

export DOCKER_HOST=${DOCKER_HOST:-unix:///run/docker-test.sock}
STATE=${DSG_DOCKER_STATE:-/var/lib/docker-test}
SUITE=${DSG_SUITE:-bookworm}
PY_BASE=dsgateway-test/base-python:$SUITE
R_BASE=dsgateway-test/base-r:$SUITE

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

say() { echo "ensure-docker: $*" >&2; }
die() { say "$*"; exit 1; }

exec 9>"${DSG_DOCKER_LOCK:-/tmp/dsgateway-ensure-docker.lock}"
flock 9

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "cannot install ${missing[*]}: no apt-get here"
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# ------------------------------------------------------------------ packages

command -v dockerd >/dev/null || apt_install docker.io
command -v mmdebstrap >/dev/null || apt_install mmdebstrap
command -v docker >/dev/null || apt_install docker.io

# ------------------------------------------------------------------ the daemon

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! answers; then
    case "$DOCKER_HOST" in
        unix://*) sock=${DOCKER_HOST#unix://} ;;
        *) die "nothing answers at $DOCKER_HOST and it is not a local socket I can start" ;;
    esac
    $SUDO mkdir -p "$STATE"
    # A daemon that died leaves its pid file and socket behind; dockerd refuses to start
    # over a live pid file only.
    pidfile="$STATE/dockerd.pid"
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        $SUDO rm -f "$pidfile" "$sock"
    fi
    say "starting dockerd on $DOCKER_HOST (log: $STATE/dockerd.log)"
    # No iptables and no default bridge: this machine is a VM without them; the client
    # image runner makes its own internal networks and never needs either.
    $SUDO nohup setsid dockerd \
        --iptables=false --ip6tables=false --bridge=none \
        --storage-driver=overlay2 \
        --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$pidfile" \
        -H "$DOCKER_HOST" >"$STATE/dockerd.log" 2>&1 </dev/null 9>&- &
    for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
    done
    answers || die "dockerd did not answer at $DOCKER_HOST; its log says:
$(tail -20 "$STATE/dockerd.log" 2>/dev/null)"
fi

# ------------------------------------------------------------------ base images

LABEL=org.dsgateway.base-packages
packages_of() {  # the package list an image was made from ("" when none or no image)
    docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

make_base() {  # make_base NAME PACKAGES
    local name=$1 packages=$2 tmp
    if [ "$(packages_of "$name")" = "$packages" ] && [ "${DSG_REBUILD_BASES:-0}" != 1 ]; then
        return 0
    fi
    tmp=$(mktemp -d)
    say "building $name with mmdebstrap ($packages)"
    if ! $SUDO mmdebstrap --quiet --variant=apt --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$tmp/base.tar" >"$tmp/mmdebstrap.log" 2>&1; then
        tail -20 "$tmp/mmdebstrap.log" >&2
        rm -rf "$tmp"
        die "mmdebstrap failed for $name"
    fi
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $LABEL=$packages" "$tmp/base.tar" "$name" >/dev/null
    rm -rf "$tmp"
}

make_base "$R_BASE" python3,python3-venv,r-base-core,r-cran-httr,r-cran-jsonlite
if [ "$(docker image inspect -f '{{.Id}}' "$PY_BASE" 2>/dev/null)" != \
    "$(docker image inspect -f '{{.Id}}' "$R_BASE")" ]; then
    docker tag "$R_BASE" "$PY_BASE"
fi

echo "DOCKER_HOST=$DOCKER_HOST"
