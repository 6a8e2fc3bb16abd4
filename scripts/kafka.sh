#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller) for tests.
#
#   scripts/kafka.sh start    fetch Kafka from Maven Central once (cached), format
#                             the storage once, start the broker in the background
#                             and wait until it really answers; prints
#                             KAFKA_BOOTSTRAP=127.0.0.1:<port> last (on stdout)
#   scripts/kafka.sh stop     SIGTERM, wait, SIGKILL; exit 0 when not running
#   scripts/kafka.sh status   exit 0 when running, 1 when not
#   scripts/kafka.sh env      print KAFKA_BOOTSTRAP=127.0.0.1:<port>
#   scripts/kafka.sh fetch    only download the jars into the cache
#   scripts/kafka.sh reset    stop and delete the run dir (data, logs, config)
#   scripts/kafka.sh run <MainClass> [args...]
#                             run a Kafka CLI class with the cached classpath, e.g.
#                             run org.apache.kafka.tools.TopicCommand \
#                                 --bootstrap-server 127.0.0.1:19092 --list
#
# Usage from a test script:   eval "$(scripts/kafka.sh start)"; export KAFKA_BOOTSTRAP
# Progress messages go to stderr, so stdout of start/env is only the env line.
#
# Environment (all optional):
#   KAFKA_VERSION           Kafka version from Maven Central (default 4.1.1)
#   IPENRICH_CACHE          cache root (default <repo>/.cache)
#   KAFKA_RUN_DIR           config, data, logs, pid (default $IPENRICH_CACHE/kafka-run)
#   KAFKA_PORT              PLAINTEXT listener on 127.0.0.1 (default 19092)
#   KAFKA_CONTROLLER_PORT   CONTROLLER listener on 127.0.0.1 (default 19093)
#   KAFKA_START_TIMEOUT     seconds to wait for the broker (default 90)
#   KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS         broker heap (default "-Xmx512m -Xms256m")
#   JAVA_HOME / MVN         java installation / maven command (default: mvn on PATH)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
CONF_DIR="$SCRIPT_DIR/kafka"

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
CACHE=${IPENRICH_CACHE:-$ROOT/.cache}
RUN_DIR=${KAFKA_RUN_DIR:-$CACHE/kafka-run}
PORT=${KAFKA_PORT:-19092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
MVN=${MVN:-mvn}
if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

BOOTSTRAP="127.0.0.1:$PORT"

msg() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }

# Make a path absolute (the broker and maven run with other working dirs).
abspath() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd -P)" "${1#./}" ;;
  esac
}
CACHE=$(abspath "$CACHE")
RUN_DIR=$(abspath "$RUN_DIR")

DIST_DIR="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$DIST_DIR/libs"
MARKER="$DIST_DIR/.fetched"
PID_FILE="$RUN_DIR/kafka.pid"
CONFIG="$RUN_DIR/server.properties"
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/logs"
SERVER_LOG="$LOG_DIR/server.log"
OUT_LOG="$RUN_DIR/kafka.out"

for v in PORT CONTROLLER_PORT START_TIMEOUT STOP_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
[[ $PORT != "$CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

# ---------------------------------------------------------------------------
# jars

fetch() {
  if [[ -f "$MARKER" ]]; then
    return 0
  fi
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install Java 17+ or set JAVA_HOME)"
  command -v "$MVN" >/dev/null 2>&1 || die "maven ('$MVN') not found; it is needed once to fetch Kafka $KAFKA_VERSION"
  msg "fetching Apache Kafka $KAFKA_VERSION and its runtime dependencies from Maven Central into $LIBS"
  mkdir -p "$DIST_DIR"
  local tmp="$DIST_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  # (maven 3.8 prints colour resets even in batch mode: strip them)
  if ! "$MVN" -B -q -Dstyle.color=never -f "$CONF_DIR/pom.xml" \
      -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1 \
      | sed 's/\x1b\[[0-9;]*m//g' >&2; then
    rm -rf "$tmp"
    die "maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see output above)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"; }
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  {
    echo "kafka_version=$KAFKA_VERSION"
    echo "fetched_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "jars=$(find "$LIBS" -name '*.jar' | wc -l)"
  } >"$MARKER"
  msg "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

# Run a Kafka main class with the cached classpath (short-lived tools).
run_class() {
  "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.xml" \
    -cp "$LIBS/*" "$@"
}

# ---------------------------------------------------------------------------
# process bookkeeping

# Prints the broker pid and returns 0 if the pid file points at a live broker.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must be our kafka.Kafka.
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  fi
  printf '%s\n' "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Byte offset of server.log when this start began (the file is appended to),
# so that a failed start shows its own lines, not an older run's.
LOG_OFFSET=0

show_logs() {
  if [[ -s "$SERVER_LOG" ]] && (($(wc -c <"$SERVER_LOG") > LOG_OFFSET)); then
    msg "last 50 lines of $SERVER_LOG:"
    tail -c +$((LOG_OFFSET + 1)) "$SERVER_LOG" | tail -n 50 >&2
  fi
  if [[ -s "$OUT_LOG" ]]; then
    msg "last 50 lines of $OUT_LOG (broker stdout/stderr):"
    tail -n 50 "$OUT_LOG" >&2
  fi
}

# Serialise start/stop/reset of the same run dir (e.g. two test jobs at once).
lock() {
  mkdir -p "$RUN_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$RUN_DIR/.lock"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT + 600)) 9 || die "could not lock $RUN_DIR/.lock"
  fi
}

# ---------------------------------------------------------------------------
# config + storage

write_config() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  cat >"$CONFIG.tmp" <<EOF
# Written by scripts/kafka.sh on every start; edits are overwritten.
# Single-node KRaft: this node is broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$DATA_DIR
metadata.log.dir=$DATA_DIR

# One node: everything replicated once.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# Small and light: a test broker on a small shared machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
EOF
  mv "$CONFIG.tmp" "$CONFIG"
}

format_storage() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    return 0
  fi
  local cluster_id
  cluster_id=$(run_class kafka.tools.StorageTool random-uuid) || die "kafka.tools.StorageTool random-uuid failed"
  msg "formatting $DATA_DIR (cluster id $cluster_id)"
  run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" >&2 \
    || die "kafka.tools.StorageTool format failed"
}

# ---------------------------------------------------------------------------
# readiness: the broker must answer a real metadata request

probe() {
  timeout 30 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.xml" \
    -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$BOOTSTRAP" --command-config "$RUN_DIR/probe.properties" \
    --list >/dev/null 2>>"$RUN_DIR/probe.err"
}

wait_ready() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  printf '%s\n' 'request.timeout.ms=5000' 'default.api.timeout.ms=10000' \
    >"$RUN_DIR/probe.properties"
  : >"$RUN_DIR/probe.err"
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      show_logs
      die "broker process $pid exited during start-up"
    fi
    if port_open "$PORT" && probe; then
      return 0
    fi
    sleep 1
  done
  show_logs
  if [[ -s "$RUN_DIR/probe.err" ]]; then
    msg "last probe errors:"; tail -n 10 "$RUN_DIR/probe.err" >&2
  fi
  msg "broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s; stopping it"
  do_stop >/dev/null 2>&1 || true
  exit 1
}

# ---------------------------------------------------------------------------
# commands

do_start() {
  lock
  local pid
  if pid=$(running_pid); then
    msg "already running (pid $pid) on $BOOTSTRAP"
    echo "KAFKA_BOOTSTRAP=$BOOTSTRAP"
    return 0
  fi
  rm -f "$PID_FILE"
  fetch
  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "port 127.0.0.1:$p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
    fi
  done
  write_config
  format_storage

  local t0=$SECONDS
  msg "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (run dir $RUN_DIR)"
  : >"$OUT_LOG"
  if [[ -f "$SERVER_LOG" ]]; then LOG_OFFSET=$(wc -c <"$SERVER_LOG"); fi
  rm -f "$PID_FILE"
  local launcher=()
  if command -v setsid >/dev/null 2>&1; then launcher=(setsid); fi
  # The broker gets its own session (a Ctrl-C or a killed process group of the
  # caller does not take it down), writes its own pid (setsid may fork) and
  # does not inherit the lock fd 9.
  # shellcheck disable=SC2016,SC2086 # $0/$$ are for the inner shell; HEAP_OPTS is a flag list
  (cd "$RUN_DIR" && exec "${launcher[@]}" bash -c 'echo $$ >"$0" && exec "$@"' "$PID_FILE" \
      "$JAVA" $HEAP_OPTS \
      -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dkafka.logs.dir="$LOG_DIR" \
      -Dlog4j2.configurationFile="$CONF_DIR/log4j2.xml" \
      -cp "$LIBS/*" kafka.Kafka "$CONFIG" \
      </dev/null >>"$OUT_LOG" 2>&1 9>&-) &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s "$PID_FILE" ]] && break
    sleep 0.1
  done
  pid=$(<"$PID_FILE") || die "broker did not write $PID_FILE"
  wait_ready "$pid"
  msg "ready (pid $pid) after $((SECONDS - t0))s; log: $SERVER_LOG"
  echo "KAFKA_BOOTSTRAP=$BOOTSTRAP"
}

do_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PID_FILE"
    msg "not running"
    return 0
  fi
  msg "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    msg "still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  msg "stopped"
}

do_status() {
  local pid
  if pid=$(running_pid); then
    msg "running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  msg "not running"
  return 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "${BASH_SOURCE[0]}" >&2
}

cmd=${1:-}
case $cmd in
  start) do_start ;;
  stop) lock; do_stop ;;
  status) do_status ;;
  env) echo "KAFKA_BOOTSTRAP=$BOOTSTRAP" ;;
  fetch) fetch ;;
  reset)
    lock; do_stop
    rm -rf "$DATA_DIR" "$LOG_DIR" "$CONFIG" "$OUT_LOG" "$RUN_DIR/probe.properties" "$RUN_DIR/probe.err"
    msg "removed data and logs under $RUN_DIR"
    ;;
  run)
    shift
    [[ $# -ge 1 ]] || die "usage: kafka.sh run <MainClass> [args...]"
    fetch
    run_class "$@"
    ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac
