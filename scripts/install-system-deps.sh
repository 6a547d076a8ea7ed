#!/usr/bin/env bash
# Installs the Debian packages given as arguments, only those missing, R with
# --no-install-recommends. Runs as root (or through sudo when available).
set -euo pipefail
wanted=("$@")
# A Debian python3 without ensurepip cannot make the virtualenv.
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    wanted+=(python3-venv)
fi
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "Installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
