#!/usr/bin/env bash
# Makes what the Docker tests need before they ask for it: the daemon and the shared base
# image (scripts/ensure-docker.sh), then the deployment test's bases and images
# (tests/e2e/deploy_images.py). `make test` starts it with --background just before
# ruff and pytest, so on a fresh machine (an empty Docker data root: a few minutes of
# mmdebstrap and image builds) that work overlaps the tests that come first. The tests'
# fixtures run the same steps; each step holds a lock, so a fixture that comes first
# waits for the background run and then finds everything made (and if the background
# run failed, the fixture's own run fails with the reason). Nothing is made twice:
# every image is cached by what makes it.
#
#   bash scripts/prepare-docker.sh                # in the foreground
#   bash scripts/prepare-docker.sh --background   # detached; log: $PREPARE_LOG
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
PREPARE_LOG=${PREPARE_LOG:-/tmp/dsgateway-prepare-docker.log}

if [ "${1:-}" = --background ]; then
    setsid nohup bash "$0" >"$PREPARE_LOG" 2>&1 </dev/null &
    echo "prepare-docker: making the Docker images in the background (log: $PREPARE_LOG)"
    exit 0
fi

cd "$ROOT"
started=$(date +%s)
bash scripts/ensure-docker.sh
echo "prepare-docker: daemon and shared base ready after $(($(date +%s) - started)) s"
"$PYTHON" -m tests.e2e.deploy_images
echo "prepare-docker: deployment images ready after $(($(date +%s) - started)) s"
