#!/usr/bin/env bash
# Start/stop a local Apache Kafka 4.1 (KRaft, one combined broker + controller) for flusso's
# development and CI, for the `queue: {type: kafka}` backend.
#
# No distribution tarball or Docker: services/kafka/pom.xml lists org.apache.kafka:kafka_2.13,
# Maven copies it and its dependencies from Maven Central into services/kafka/target/lib, and
# the script runs main class kafka.Kafka with services/kafka/server.properties (rendered with
# the ports and the data directory). The storage is formatted by the script on first start.
#
#   bash services/kafka.sh up       # fetch jars if needed, format if needed, start, wait until it serves
#   bash services/kafka.sh down     # SIGTERM (a clean shutdown), wait up to 30 s, then SIGKILL
#   bash services/kafka.sh status   # exit 0 if up, 1 otherwise
#
# Environment:
#   KAFKA_PORT             broker port (default 9092)
#   KAFKA_CONTROLLER_PORT  controller port (default 9093)
#   KAFKA_HEAP             heap, -Xms and -Xmx (default 512m)
#   KAFKA_JAVA_OPTS        extra JVM options
#   KAFKA_START_TIMEOUT    seconds to wait in `up` (default 120)
#   JAVA_HOME              JDK to run with (default: `java` on PATH; Java 17 or newer)
#
# State lives in .flusso/kafka/ (data/, logs/, server.properties, kafka.pid); the jars in
# services/kafka/target/lib/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJ="$ROOT/services/kafka"
STATE="$ROOT/.flusso/kafka"
PIDFILE="$STATE/kafka.pid"
LOGDIR="$STATE/logs"
DATA="$STATE/data"
CONF="$STATE/server.properties"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-9093}"
TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
MAIN_CLASS="kafka.Kafka"
STORAGE_TOOL="kafka.tools.StorageTool"
CP="$PROJ/target/lib/*"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA="java"
fi

log() { echo "kafka: $*"; }

# pid from the pid file, only if that process is alive and is our broker.
running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MAIN_CLASS $CONF" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Serving: the broker logged that it started (after its controller elected itself and it
# registered; `up` moves an older run's log aside), and its port accepts connections.
serving() {
    port_open "$PORT" || return 1
    grep -qs "Kafka Server started" "$LOGDIR/server.log"
}

# The jars are fetched again when the pom changes.
fetch_jars() {
    local stamp="$PROJ/target/.flusso-pom-hash" want
    want="$(sha256sum "$PROJ/pom.xml" | cut -d' ' -f1)"
    if [[ -d "$PROJ/target/lib" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || { log "mvn not found (apt-get install -y maven)"; exit 1; }
    log "fetching Kafka's jars (mvn, first run downloads ~45 jars from Maven Central)..."
    local t0=$SECONDS
    mkdir -p "$PROJ/target"
    rm -rf "$PROJ/target/lib"   # no stale jars from an older dependency set
    if ! (cd "$PROJ" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies \
            -DoutputDirectory=target/lib -DincludeScope=runtime) >"$PROJ/target/fetch.log" 2>&1; then
        log "fetch failed; tail of $PROJ/target/fetch.log:"
        tail -n 40 "$PROJ/target/fetch.log"
        exit 1
    fi
    echo "$want" >"$stamp"
    log "jars fetched in $((SECONDS - t0)) s"
}

java_major() {
    "$JAVA" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n1
}

render_config() {
    mkdir -p "$DATA" "$LOGDIR"
    sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CPORT|g" -e "s|@DATA@|$DATA|g" \
        "$PROJ/server.properties" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
}

# Format the storage once (a new cluster id); an existing one keeps its data and id.
format_storage() {
    [[ -f "$DATA/meta.properties" ]] && return 0
    local id
    id="$("$JAVA" -cp "$CP" "$STORAGE_TOOL" random-uuid 2>/dev/null | tail -n1)"
    [[ -n "$id" ]] || { log "cannot run $STORAGE_TOOL random-uuid"; exit 1; }
    if ! "$JAVA" -Xmx256m "-Dlog4j2.configurationFile=$PROJ/log4j2.properties" "-Dkafka.logs.dir=$LOGDIR" \
            -cp "$CP" "$STORAGE_TOOL" format --cluster-id "$id" --config "$CONF" \
            >"$LOGDIR/format.log" 2>&1; then
        log "kafka-storage format failed; $LOGDIR/format.log:"
        cat "$LOGDIR/format.log"
        exit 1
    fi
    log "formatted $DATA (cluster id $id)"
}

cmd_up() {
    local pid T0
    T0=$(date +%s.%N)
    if pid="$(running_pid)"; then
        if serving; then
            log "already running (pid $pid) at 127.0.0.1:$PORT"
            exit 0
        fi
        log "pid $pid is alive but not serving on 127.0.0.1:$PORT yet; waiting for it"
    else
        for p in "$PORT" "$CPORT"; do
            if port_open "$p"; then
                log "something else already listens on 127.0.0.1:$p (not our broker); set KAFKA_PORT / KAFKA_CONTROLLER_PORT or stop it"
                exit 1
            fi
        done
        fetch_jars
        local major
        major="$(java_major)"
        [[ -n "$major" ]] || { log "cannot run $JAVA"; exit 1; }
        ((major >= 17)) || { log "$JAVA is Java $major; Kafka 4.1's broker needs 17 or newer (set JAVA_HOME)"; exit 1; }
        render_config
        format_storage
        [[ -f "$LOGDIR/server.log" ]] && mv -f "$LOGDIR/server.log" "$LOGDIR/server.log.prev"
        rm -f "$LOGDIR"/server.log.[0-9]*
        local heap="${KAFKA_HEAP:-512m}"
        local -a jvm=(
            "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
            -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
            "-Dlog4j2.configurationFile=$PROJ/log4j2.properties" "-Dkafka.logs.dir=$LOGDIR"
        )
        # shellcheck disable=SC2206
        [[ -n "${KAFKA_JAVA_OPTS:-}" ]] && jvm+=(${KAFKA_JAVA_OPTS})
        # setsid: own session, so the broker survives the calling shell (and CI step) ending
        setsid nohup "$JAVA" "${jvm[@]}" -cp "$CP" "$MAIN_CLASS" "$CONF" \
            </dev/null >"$LOGDIR/stdout.log" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
        log "started java (pid $pid), waiting up to ${TIMEOUT}s for 127.0.0.1:$PORT"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if serving; then
            log "up at 127.0.0.1:$PORT in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (pid $pid)"
            exit 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "java exited during start-up"
            break
        fi
        sleep 0.3
    done
    kill -0 "$pid" 2>/dev/null && log "not serving after ${TIMEOUT}s"
    echo "--- $LOGDIR/stdout.log"; tail -n 30 "$LOGDIR/stdout.log" 2>/dev/null || true
    echo "--- $LOGDIR/server.log"; grep -E 'ERROR|FATAL' "$LOGDIR/server.log" 2>/dev/null | tail -n 20 || true
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
    local pid
    if pid="$(running_pid)" && serving; then
        log "running (pid $pid) at 127.0.0.1:$PORT (controller 127.0.0.1:$CPORT, data $DATA)"
        exit 0
    fi
    if [[ -n "${pid:-}" ]]; then log "pid $pid alive but not serving on 127.0.0.1:$PORT"; else log "not running"; fi
    exit 1
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
