#!/usr/bin/env bash
# The real PostgreSQL 15 that flusso's demo, tests and benchmarks use: logical WAL, loopback only,
# data, log and socket under .flusso/postgres. Usage: services/postgres.sh up|down|status
# FLUSSO_PG_STOP_MODE=immediate makes `down` a crash (tests of a lost server); fast by default. A fast
# stop waits for logical walsenders until their clients confirm (or wal_sender_timeout passes).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/.flusso/postgres"
mkdir -p "$root/.flusso"
# As root, the server runs as the postgres user, who may not be able to reach a checkout under a
# private home: then the files live in /var/tmp and .flusso/postgres links to them.
if [ "$(id -u)" = 0 ] && [ ! -L "$dir" ] && [ ! -d "$dir/data" ] \
    && ! runuser -u postgres -- test -x "$root/.flusso" 2>/dev/null; then
    real="/var/tmp/flusso-postgres-$(printf '%s' "$root" | cksum | cut -d' ' -f1)"
    mkdir -p "$real"
    ln -sfn "$real" "$dir"
fi
[ -L "$dir" ] && dir=$(readlink -f "$dir")
data="$dir/data"
log="$dir/postgres.log"
port="${FLUSSO_PG_PORT:-5432}"
password="${FLUSSO_PG_PASSWORD:-postgres}"
bindir="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v pg_ctl)")}"
dsn="postgresql://postgres:${password}@127.0.0.1:${port}/postgres"
shown_dsn="postgresql://postgres:***@127.0.0.1:${port}/postgres"

# initdb and postgres refuse to run as root: run them as the postgres user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ready() {
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres
}

running() {
    [ -f "$data/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

init() {
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        chmod 755 "$root/.flusso" "$dir"
    fi
    local pwfile
    pwfile=$(mktemp)
    printf '%s\n' "$password" >"$pwfile"
    chmod 644 "$pwfile"
    as_pg "$bindir/initdb" -D "$data" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        rm -f "$pwfile"; cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
    cat >>"$data/postgresql.conf" <<CONF

# flusso services/postgres.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 200
wal_sender_timeout = 60s
shared_buffers = 256MB
max_wal_size = 2GB
log_min_messages = warning
# what bench/ reads of each statement's cost (bench/pgstat.py); a few percent at most
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
CONF
    cat >"$data/pg_hba.conf" <<HBA
local   all          all                     scram-sha-256
host    all          all     127.0.0.1/32    scram-sha-256
host    replication  all     127.0.0.1/32    scram-sha-256
HBA
}

up() {
    local t0=$SECONDS
    if running && ready; then
        echo "postgres: already running at $shown_dsn"
        return 0
    fi
    [ -f "$data/PG_VERSION" ] || init
    as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null || {
        tail -n 30 "$log" >&2; exit 1; }
    for _ in $(seq 1 60); do
        ready && break
        sleep 0.5
    done
    ready || { tail -n 30 "$log" >&2; echo "postgres: did not accept connections" >&2; exit 1; }
    echo "postgres: up in $((SECONDS - t0))s at $shown_dsn (wal_level=logical)"
}

down() {
    if running; then
        as_pg "$bindir/pg_ctl" -D "$data" -m "${FLUSSO_PG_STOP_MODE:-fast}" -w -t 90 stop >/dev/null
        echo "postgres: stopped"
    else
        echo "postgres: not running"
    fi
}

status() {
    if running && ready; then
        echo "postgres: running at $shown_dsn"
    else
        echo "postgres: not running"
        return 1
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    dsn) echo "$dsn" ;;
    *) echo "usage: $0 up|down|status|dsn" >&2; exit 2 ;;
esac
