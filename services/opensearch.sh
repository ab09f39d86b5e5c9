#!/usr/bin/env bash
# Start/stop a local single-node OpenSearch 2.19 for flusso's development and CI.
#
# No distribution tarball or Docker: services/opensearch/ is a small Maven project whose
# dependencies are the OpenSearch server jars plus the plugins flusso needs, and
# dev.flusso.node.FlussoNode starts a node from them.
#
#   bash services/opensearch.sh up       # build if needed, start, wait for yellow/green
#   bash services/opensearch.sh down     # SIGTERM, wait up to 30 s, then SIGKILL
#   bash services/opensearch.sh status   # exit 0 and print health if up, 1 otherwise
#
# Environment:
#   OPENSEARCH_PORT            HTTP port (default 9200)
#   OPENSEARCH_TRANSPORT_PORT  transport port (default 9300)
#   OPENSEARCH_HEAP_MIN/MAX    heap (default 512m / 1g)
#   OPENSEARCH_JAVA_OPTS       extra JVM options
#   OPENSEARCH_START_TIMEOUT   seconds to wait for the cluster in `up` (default 180)
#   JAVA_HOME                  JDK to run with (default: `java` on PATH)
#
# State lives in .flusso/opensearch/ (data/, logs/, opensearch.pid); the build in
# services/opensearch/target/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJ="$ROOT/services/opensearch"
STATE="$ROOT/.flusso/opensearch"
PIDFILE="$STATE/opensearch.pid"
LOGDIR="$STATE/logs"
PORT="${OPENSEARCH_PORT:-9200}"
TPORT="${OPENSEARCH_TRANSPORT_PORT:-9300}"
TIMEOUT="${OPENSEARCH_START_TIMEOUT:-180}"
URL="http://127.0.0.1:$PORT"
MAIN_CLASS="dev.flusso.node.FlussoNode"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA="java"
fi

log() { echo "opensearch: $*"; }

# pid from the pid file, only if that process is alive and is our node.
running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MAIN_CLASS" || return 1
    echo "$pid"
}

health() { curl -sf --max-time 5 "$URL/_cluster/health" 2>/dev/null; }

healthy() {
    local h
    h="$(health)" || return 1
    [[ "$h" == *'"status":"green"'* || "$h" == *'"status":"yellow"'* ]]
}

# Hash of everything the build depends on; the build is redone when it changes.
build_hash() {
    cat "$PROJ/pom.xml" $(find "$PROJ/src" -type f | LC_ALL=C sort) | sha256sum | cut -d' ' -f1
}

build() {
    local stamp="$PROJ/target/.flusso-build-hash" want
    want="$(build_hash)"
    if [[ -d "$PROJ/target/classes" && -d "$PROJ/target/lib" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || { log "mvn not found (apt-get install -y maven)"; exit 1; }
    log "building $PROJ (mvn, first run downloads ~75 jars from Maven Central)..."
    local t0=$SECONDS
    mkdir -p "$PROJ/target"
    rm -rf "$PROJ/target/lib"   # no stale jars from an older dependency set
    if ! (cd "$PROJ" && mvn -q -B -Dstyle.color=never process-classes) >"$PROJ/target/build.log" 2>&1; then
        log "build failed; tail of $PROJ/target/build.log:"
        tail -n 40 "$PROJ/target/build.log"
        exit 1
    fi
    echo "$want" >"$stamp"
    log "build done in $((SECONDS - t0)) s"
}

java_major() {
    "$JAVA" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n1
}

cmd_up() {
    local pid
    if pid="$(running_pid)"; then
        if healthy; then
            log "already running (pid $pid) at $URL"
            exit 0
        fi
        log "pid $pid is alive but $URL is not healthy yet; waiting for it"
    else
        if curl -s --max-time 3 -o /dev/null "$URL" 2>/dev/null; then
            log "something else already answers on $URL (not our node); set OPENSEARCH_PORT or stop it"
            exit 1
        fi
        build
        mkdir -p "$STATE/data" "$LOGDIR" "$STATE/tmp"
        local major locale_opt
        major="$(java_major)"
        [[ -n "$major" ]] || { log "cannot run $JAVA"; exit 1; }
        # as in the distribution's jvm.options: COMPAT was removed in JDK 23
        if ((major >= 23)); then locale_opt="-Djava.locale.providers=SPI,CLDR"; else locale_opt="-Djava.locale.providers=SPI,COMPAT"; fi
        local -a extra=()
        # Lucene 9.12 calls java.lang.foreign on recent JDKs; silences the stderr warning
        ((major >= 22)) && extra+=(--enable-native-access=ALL-UNNAMED)
        local -a jvm=(
            "-Xms${OPENSEARCH_HEAP_MIN:-512m}" "-Xmx${OPENSEARCH_HEAP_MAX:-1g}" -Xss1m
            -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -XX:+ExitOnOutOfMemoryError
            -Dfile.encoding=UTF-8 -Djava.awt.headless=true -Djna.nosys=true "$locale_opt"
            -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true
            -Dio.netty.recycler.maxCapacityPerThread=0
            -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true
            "-Djava.io.tmpdir=$STATE/tmp"
            "-Dopensearch.path.home=$STATE" "-Dopensearch.path.conf=$PROJ/config"
            "${extra[@]}"
        )
        # shellcheck disable=SC2206
        [[ -n "${OPENSEARCH_JAVA_OPTS:-}" ]] && jvm+=(${OPENSEARCH_JAVA_OPTS})
        T0=$(date +%s.%N)
        # setsid: own session, so the node survives the calling shell (and CI step) ending
        setsid nohup "$JAVA" "${jvm[@]}" -cp "$PROJ/target/classes:$PROJ/target/lib/*" "$MAIN_CLASS" \
            "path.data=$STATE/data" "path.logs=$LOGDIR" \
            "http.port=$PORT" "transport.port=$TPORT" \
            </dev/null >"$LOGDIR/stdout.log" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
        log "started java (pid $pid), waiting up to ${TIMEOUT}s for $URL"
    fi
    local t0="${T0:-$(date +%s.%N)}" deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if healthy; then
            log "up at $URL in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (pid $pid)"
            exit 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "java exited during start-up"
            break
        fi
        sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && log "not healthy after ${TIMEOUT}s"
    echo "--- $LOGDIR/stdout.log"; tail -n 30 "$LOGDIR/stdout.log" 2>/dev/null || true
    echo "--- $LOGDIR/flusso-dev.log"; tail -n 40 "$LOGDIR/flusso-dev.log" 2>/dev/null || true
    exit 1
}

cmd_down() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        log "not running"
        exit 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped (pid $pid)"; exit 0; }
        sleep 0.5
    done
    log "pid $pid still alive after 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    rm -f "$PIDFILE"
    log "killed (pid $pid)"
}

cmd_status() {
    local pid h
    if pid="$(running_pid)" && h="$(health)"; then
        log "running (pid $pid) at $URL"
        echo "$h"
        exit 0
    fi
    if [[ -n "${pid:-}" ]]; then log "pid $pid alive but $URL not answering"; else log "not running"; fi
    exit 1
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
