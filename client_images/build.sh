#!/usr/bin/env bash
# Builds the client images from this checkout without any registry or index at build
# time: the Python wheels are made on the host first (PyPI through pip, with the
# project's constraints), then installed in the image with --no-index.
#
#   client_images/build.sh                      # FROM python:3.11-slim and rocker/r-ver
#   PY_BASE=dsgateway-test/base-python:bookworm R_BASE=dsgateway-test/base-r:bookworm \
#   INSTALL_DATASHIELD=false client_images/build.sh    # the local test bases
#
# Prints the image IDs (the digests a data steward approves).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PIP=${PIP:-$ROOT/.venv/bin/pip}
PY_BASE=${PY_BASE:-python:3.11-slim}
R_BASE=${R_BASE:-rocker/r-ver:4.4.1}
TAG=${TAG:-latest}

mkdir -p "$HERE/python/wheels" "$HERE/python/dist"
rm -f "$HERE/python/dist/"*.whl
"$PIP" wheel -q -c "$ROOT/constraints.txt" -w "$HERE/python/wheels" \
    click pyyaml requests datashield datashield-opal numpy pandas
"$PIP" wheel -q --no-deps -w "$HERE/python/dist" "$ROOT"

docker build -q --build-arg BASE_IMAGE="$PY_BASE" -t "dsgateway/client-python:$TAG" "$HERE/python"
docker build -q --build-arg BASE_IMAGE="$R_BASE" \
    --build-arg INSTALL_DATASHIELD="${INSTALL_DATASHIELD:-true}" \
    -t "dsgateway/client-r:$TAG" "$HERE/r"
for image in "dsgateway/client-python:$TAG" "dsgateway/client-r:$TAG"; do
    echo "$image $(docker image inspect --format '{{.Id}}' "$image")"
done
