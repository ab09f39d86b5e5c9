#!/usr/bin/env bash
# `make demo`: the Dagster UI on http://127.0.0.1:3000 over a sample bookstore that flusso keeps in
# sync with OpenSearch. Expects the venv and the services (`make demo` sees to both).
#
# Ctrl-C stops it cleanly: the live_capture run is terminated first (it flushes and acknowledges),
# then `dagster dev` and everything it started; nothing is left holding the replication slot.
#
#   DEMO_BOOKS=20000     books to generate into a new `bookstore` database
#   DEMO_RESET=1         drop the demo's database, slot and index first, and start over
#   DEMO_PORT=3000       the UI's port (loopback only)
set -euo pipefail
set -m  # background jobs get a process group of their own: Ctrl-C reaches this script only
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=.venv/bin
[ -x "$BIN/dagster" ] || { echo "no .venv: run \`make demo\`" >&2; exit 1; }

pg_port=${FLUSSO_PG_PORT:-5432}
os_url=${OPENSEARCH_URL:-http://127.0.0.1:${OPENSEARCH_PORT:-9200}}
admin_dsn="postgresql://postgres:${FLUSSO_PG_PASSWORD:-postgres}@127.0.0.1:${pg_port}/postgres"
books=${DEMO_BOOKS:-20000}
port=${DEMO_PORT:-3000}
db=bookstore
slot=flusso_bookstore
index=books

export DAGSTER_HOME="$PWD/dagster_home"
export FLUSSO_CONFIG="$PWD/examples/bookstore/flusso.yaml"
export FLUSSO_PG_DSN="${admin_dsn%/postgres}/$db"
export OPENSEARCH_URL="$os_url"
export FLUSSO_HEARTBEAT_S=${FLUSSO_HEARTBEAT_S:-15}
log="$DAGSTER_HOME/dagster-dev.log"
psql_cmd="psql -h 127.0.0.1 -p $pg_port -U postgres $db"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use (another dagster dev?): stop it or set DEMO_PORT" >&2
    exit 1
fi

if [ "${DEMO_RESET:-}" = 1 ]; then
    echo "demo: resetting: slot $slot, database $db, index $index"
    $BIN/flusso teardown -c "$FLUSSO_CONFIG" --yes >/dev/null 2>&1 || true
    $BIN/python - "$admin_dsn" "$db" <<'EOF'
import sys, psycopg
from psycopg import sql
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(sys.argv[2])))
EOF
    curl -fsS -o /dev/null -X DELETE "$os_url/$index" 2>/dev/null || true
fi

state=$($BIN/python scripts/demo_helpers.py database "$admin_dsn" "$db")
if [ "$state" != ready ]; then
    echo "demo: generating $books books into database $db"
    $BIN/python examples/bookstore/generate.py --books "$books" --dsn "$FLUSSO_PG_DSN"
fi

echo "demo: starting dagster dev on http://127.0.0.1:$port (log: $log)"
$BIN/dagster dev -h 127.0.0.1 -p "$port" -w workspace.yaml >"$log" 2>&1 &
dev=$!

stop() {
    trap 'echo "demo: second interrupt: killing everything"; kill -KILL -- -"$dev" 2>/dev/null; exit 130' INT TERM
    echo
    echo "demo: stopping: terminating runs first (flush, ack), then dagster dev"
    $BIN/python scripts/demo_helpers.py stop-runs || true
    kill -INT -- -"$dev" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 -- -"$dev" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- -"$dev" 2>/dev/null || true
    $BIN/python scripts/demo_helpers.py cancel-queued || true
    $BIN/python scripts/demo_helpers.py slot "$FLUSSO_PG_DSN" "$slot" || true
    echo "demo: stopped"
    exit 0
}
trap stop INT TERM

for _ in $(seq 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/server_info" 2>/dev/null && break
    kill -0 "$dev" 2>/dev/null || { echo "dagster dev exited: see $log" >&2; tail -n 30 "$log" >&2; exit 1; }
    sleep 0.5
done

cat <<EOF

  flusso demo: the Dagster UI is at http://127.0.0.1:$port

  What to look at
    Assets > search_index     one partition per index ($index): seed_sensor materializes it within
                              a minute (metadata: documents, rate); its checks compare documents
                              with rows and the mapping with the config
    Assets > flusso_live      live_capture's heartbeats: slot lag, confirmed LSN, throughput
    Runs                      live_capture runs until terminated; live_capture_keeper restarts it
    Automation                the two sensors (running) and the reseed schedule (stopped)

  What to try
    $psql_cmd -c "UPDATE book SET title = 'Hello from PostgreSQL' WHERE id = 1"
    curl -s '$os_url/$index/_doc/1?filter_path=_source.title'
    curl -s '$os_url/$index/_search?q=title:hello&filter_path=hits.hits._source.title'
    $psql_cmd -c "UPDATE publisher SET name = 'Renamed House' WHERE id = 1"
    curl -s '$os_url/$index/_count?q=publisher.name:renamed'
    (psql asks for the services' password: postgres, unless FLUSSO_PG_PASSWORD says otherwise)
    Runs > live_capture > Terminate: the run flushes, acks and ends CANCELED; within a minute
    live_capture_keeper starts a new one, which resumes from the slot

  Ctrl-C stops everything cleanly.
EOF

while kill -0 "$dev" 2>/dev/null; do wait "$dev" || true; done
echo "dagster dev exited: see $log" >&2
exit 1
