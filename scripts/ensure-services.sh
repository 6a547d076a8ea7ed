#!/usr/bin/env bash
# Makes sure the services the test suite talks to are up, and does nothing when they
# already are (safe to run again and again; `make test` runs it before pytest):
#   PostgreSQL on 127.0.0.1:5432, user postgres without a password (trust on loopback,
#     for this test machine), database `test`;
#   Redis on 127.0.0.1:6379 (nothing kept on disk).
# On a fresh Debian machine it installs `postgresql` and `redis-server` with apt first.
# Override the addresses with PGPORT / REDIS_PORT if needed.
set -euo pipefail

PGHOST=127.0.0.1
PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

say() { echo "ensure-services: $*"; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        say "cannot install ${missing[*]}: no apt-get here; install them yourself" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

wait_for() {  # wait_for DESCRIPTION COMMAND...
    local what=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    say "$what did not come up" >&2
    exit 1
}

as_postgres() {  # run a command as the postgres system user (peer auth on the socket)
    if [ "$(id -un)" = postgres ]; then "$@"; elif [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    else sudo -u postgres "$@"; fi
}

# ------------------------------------------------------------------ PostgreSQL

pg_ready() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }
pg_tcp() { psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -w -Atqc "$1"; }

if ! command -v pg_isready >/dev/null || ! pg_ready; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
    fi
    version=$(ls /etc/postgresql | sort -V | tail -1)
    say "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for "PostgreSQL on $PGHOST:$PGPORT" pg_ready
fi

if ! pg_tcp "SELECT 1" >/dev/null 2>&1; then
    # A fresh Debian cluster asks for passwords over TCP: trust loopback (tests only).
    hba=$(as_postgres psql -Atqc "SHOW hba_file")
    say "trusting loopback connections in $hba (test machine)"
    tmp=$(mktemp)
    {
        echo "host all all 127.0.0.1/32 trust  # dsgateway tests (ensure-services.sh)"
        echo "host all all ::1/128 trust  # dsgateway tests (ensure-services.sh)"
        $SUDO cat "$hba"
    } >"$tmp"
    $SUDO cp "$tmp" "$hba"
    rm -f "$tmp"
    as_postgres psql -Atqc "SELECT pg_reload_conf()" >/dev/null
    wait_for "password-less PostgreSQL login" pg_tcp "SELECT 1"
fi

if [ "$(pg_tcp "SELECT 1 FROM pg_database WHERE datname = 'test'")" != "1" ]; then
    say "creating database test"
    pg_tcp "CREATE DATABASE test" >/dev/null
fi

# ------------------------------------------------------------------ Redis

redis_ready() {
    if command -v redis-cli >/dev/null; then
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    else
        return 1
    fi
}

if ! redis_ready; then
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting Redis on 127.0.0.1:$REDIS_PORT"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for "Redis on 127.0.0.1:$REDIS_PORT" redis_ready
fi

say "PostgreSQL and Redis are up"
