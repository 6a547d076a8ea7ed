#!/usr/bin/env bash
# Builds the deployment images from this checkout:
#   $IMAGE_PREFIX/coordinator:$TAG   the API, the relay and the Celery worker (one image)
#   $IMAGE_PREFIX/node:$TAG          a station: gateway (R + rpy2 + dsGatewayBase) + agent
#
# The Python wheels are made on THIS machine (`pip wheel`) and installed in the images
# with `pip install --no-index`, so a build needs no package registry inside Docker.
# rpy2 is compiled against the R of this machine: build on a machine whose R has the
# same version as the node image's (Debian bookworm: R 4.2.2), or set RPY2_REQUIREMENT.
#
# Environment (all optional):
#   PY_BASE_IMAGE     base of the coordinator image   (python:3.11-slim-bookworm)
#   NODE_BASE_IMAGE   base of the node image          (debian:bookworm-slim)
#   IMAGE_PREFIX, TAG image names                     (dsgateway, latest)
#   PYTHON            the Python that runs pip        (python3; must be 3.11 like the images)
#   RPY2_REQUIREMENT  e.g. "rpy2==3.5.17"             (scripts/rpy2-requirement.sh decides)
#   ONLY              "coordinator" or "node" to build just one
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PY_BASE_IMAGE=${PY_BASE_IMAGE:-python:3.11-slim-bookworm}
NODE_BASE_IMAGE=${NODE_BASE_IMAGE:-debian:bookworm-slim}
IMAGE_PREFIX=${IMAGE_PREFIX:-dsgateway}
TAG=${TAG:-latest}
PYTHON=${PYTHON:-python3}
ONLY=${ONLY:-}
BUILD="$HERE/build"

say() { echo "docker/build.sh: $*" >&2; }

RPY2_REQUIREMENT=${RPY2_REQUIREMENT:-$(bash "$ROOT/scripts/rpy2-requirement.sh")}

# 1. The wheels: dsgateway itself and every dependency of the node and the coordinator.
#    The project's own wheel is made anew each time; pip's cache keeps the rest quick.
mkdir -p "$BUILD/wheels"
rm -f "$BUILD"/wheels/dsgateway-*.whl
say "pip wheel -> $BUILD/wheels ($RPY2_REQUIREMENT)"
# async-timeout: redis wants it on Python < 3.11.3 (Debian bookworm has 3.11.2), which
# pip on a newer 3.11 would leave out.
if ! "$PYTHON" -m pip wheel -q -c "$ROOT/constraints.txt" -w "$BUILD/wheels" \
    "$ROOT[node,coordinator,images]" "$RPY2_REQUIREMENT" "async-timeout>=4.0.3" \
    >"$BUILD/pip-wheel.log" 2>&1; then
    tail -40 "$BUILD/pip-wheel.log" >&2
    say "pip wheel failed (log: $BUILD/pip-wheel.log)"
    exit 1
fi
echo "$RPY2_REQUIREMENT" >"$BUILD/rpy2-requirement.txt"

# 2. The R server package, copied so that the build context stays docker/ alone.
rm -rf "$BUILD/dsGatewayBase"
cp -r "$ROOT/algorithms/R/dsGatewayBase" "$BUILD/dsGatewayBase"

# 3. The images (the legacy builder and BuildKit both work; no registry is needed when
#    the bases are local images).
build() {  # build NAME DOCKERFILE BASE
    say "building $IMAGE_PREFIX/$1:$TAG FROM $3"
    docker build -q -f "$HERE/$2" --build-arg "BASE_IMAGE=$3" \
        -t "$IMAGE_PREFIX/$1:$TAG" "$HERE" >/dev/null
}
if [ -z "$ONLY" ] || [ "$ONLY" = coordinator ]; then
    build coordinator coordinator/Dockerfile "$PY_BASE_IMAGE"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = node ]; then
    build node station/Dockerfile "$NODE_BASE_IMAGE"
fi
say "done"
