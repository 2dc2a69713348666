#!/usr/bin/env bash
# Local Apache Kafka (KRaft, single combined broker+controller) for adsmon.
#
#   kafka.sh install   fetch kafka_2.13 + runtime deps from Maven Central (deploy/local/kafka/pom.xml)
#   kafka.sh start     install if missing, format storage once, start, wait until it answers, write env
#   kafka.sh stop      SIGTERM, wait (ADSMON_KAFKA_STOP_TIMEOUT, 60s), then SIGKILL
#   kafka.sh status    exit 0 if running, 3 if not
#   kafka.sh reset     wipe topic data (keeps cluster id); restarts the broker if it was running
#   kafka.sh smoke [args]  end-to-end check with kafka-python (kafka/smoke.py: topic, idempotent produce, consume)
#
# Env: ADSMON_LOCAL, ADSMON_KAFKA_PORT (9092), ADSMON_KAFKA_CONTROLLER_PORT (9093),
#      ADSMON_KAFKA_VERSION (4.1.1), ADSMON_KAFKA_HEAP_OPTS (-Xms512m -Xmx512m), JAVA / JAVA_HOME,
#      ADSMON_PYTHON (python with kafka-python for the readiness probe; default .venv).
set -euo pipefail
ADSMON_SVC=kafka
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

K_VERSION="${ADSMON_KAFKA_VERSION:-4.1.1}"
K_HOST=127.0.0.1
K_PORT="${ADSMON_KAFKA_PORT:-9092}"
K_CPORT="${ADSMON_KAFKA_CONTROLLER_PORT:-9093}"
K_SRC="$ADSMON_ROOT/deploy/local/kafka"
K_POM="$K_SRC/pom.xml"
K_LOG4J="$K_SRC/log4j2.xml"
K_HOME="$ADSMON_LOCAL/kafka"
K_LIBS="$K_HOME/$K_VERSION/libs"
K_MARKER="$K_HOME/$K_VERSION/.installed"
K_DATA="$K_HOME/data"
K_CONF="$K_HOME/server.properties"
K_CLUSTER_ID_FILE="$K_HOME/cluster.id"
K_LOG="$ADSMON_LOG_DIR/kafka.log"
K_PIDFILE="$ADSMON_RUN_DIR/kafka.pid"
K_STOP_TIMEOUT="${ADSMON_KAFKA_STOP_TIMEOUT:-60}"
K_HEAP="${ADSMON_KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"

pom_hash() { sha256sum "$K_POM" | cut -c1-16; }

installed() { [ -f "$K_MARKER" ] && [ "$(cat "$K_MARKER")" = "$K_VERSION $(pom_hash)" ]; }

jar_has() { # jar_has <jar> <entry>: zip entry names are stored uncompressed
  LC_ALL=C grep -aqF "$2" "$1"
}

cmd_install() {
  ensure_dirs
  [ -f "$K_POM" ] || die "missing $K_POM"
  installed && return 0
  need_cmd mvn "apt-get install maven"
  local java tmp
  java="$(find_java)"
  tmp="$K_HOME/$K_VERSION/libs.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  info "fetching org.apache.kafka:kafka_2.13:$K_VERSION and runtime deps with Maven (log: $K_LOG)"
  if ! mvn -q -B -Dstyle.color=never -f "$K_POM" -Dkafka.version="$K_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >>"$K_LOG" 2>&1; then
    rm -rf "$tmp"
    tail -n 20 "$K_LOG" >&2
    die "could not fetch kafka_2.13:$K_VERSION from Maven Central (log: $K_LOG)"
  fi
  local core="$tmp/kafka_2.13-$K_VERSION.jar"
  [ -f "$core" ] || die "kafka_2.13-$K_VERSION.jar missing after download"
  jar_has "$core" 'kafka/Kafka.class' || die "kafka.Kafka not in $core"
  jar_has "$core" 'kafka/tools/StorageTool.class' || die "kafka.tools.StorageTool not in $core"
  ls "$tmp"/log4j-core-*.jar "$tmp"/log4j-slf4j-impl-*.jar "$tmp"/slf4j-api-*.jar >/dev/null 2>&1 \
    || die "logging jars (log4j-core, log4j-slf4j-impl, slf4j-api) missing after download"
  # the storage tool must actually run from this classpath
  "$java" -cp "$tmp/*" -Dlog4j2.configurationFile="$K_LOG4J" -Dadsmon.kafka.log.file="$K_LOG" \
    kafka.tools.StorageTool random-uuid >/dev/null 2>>"$K_LOG" \
    || die "kafka.tools.StorageTool does not run from the downloaded classpath (log: $K_LOG)"
  rm -rf "$K_LIBS"
  mv "$tmp" "$K_LIBS"
  printf '%s %s\n' "$K_VERSION" "$(pom_hash)" >"$K_MARKER"
  info "installed Kafka $K_VERSION ($(find "$K_LIBS" -name "*.jar" | wc -l) jars) in $K_LIBS"
}

java_cmd() { # java_cmd <main> args...: the java command line for a Kafka main class
  local java="$1"; shift
  # shellcheck disable=SC2086
  printf '%s\0' "$java" $K_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$K_LOG4J" -Dadsmon.kafka.log.file="$K_LOG" \
    -Dkafka.logs.dir="$ADSMON_LOG_DIR" \
    -cp "$K_LIBS/*" "$@"
}

write_config() {
  mkdir -p "$K_DATA"
  local tmp
  tmp="$(mktemp "$K_CONF.XXXXXX")"
  cat >"$tmp" <<EOF
# Written by deploy/local/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$K_HOST:$K_CPORT
listeners=PLAINTEXT://$K_HOST:$K_PORT,CONTROLLER://$K_HOST:$K_CPORT
advertised.listeners=PLAINTEXT://$K_HOST:$K_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$K_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=168
EOF
  mv -f "$tmp" "$K_CONF"
}

format_storage() {
  [ -f "$K_DATA/meta.properties" ] && return 0
  local java="$1" cid
  if [ ! -s "$K_CLUSTER_ID_FILE" ]; then
    local -a gen
    mapfile -d '' gen < <(java_cmd "$java" kafka.tools.StorageTool random-uuid)
    "${gen[@]}" 2>>"$K_LOG" | tr -d '[:space:]' >"$K_CLUSTER_ID_FILE.tmp"
    [ -s "$K_CLUSTER_ID_FILE.tmp" ] || die "could not generate a cluster id (log: $K_LOG)"
    mv -f "$K_CLUSTER_ID_FILE.tmp" "$K_CLUSTER_ID_FILE"
  fi
  cid="$(cat "$K_CLUSTER_ID_FILE")"
  info "formatting storage $K_DATA (cluster id $cid)"
  local -a fmt
  mapfile -d '' fmt < <(java_cmd "$java" kafka.tools.StorageTool format -t "$cid" -c "$K_CONF" --ignore-formatted)
  "${fmt[@]}" >>"$K_LOG" 2>&1 || { tail -n 20 "$K_LOG" >&2; die "storage format failed (log: $K_LOG)"; }
}

# Prints the broker pid if running (pid file, else a process started with our config).
running_pid() {
  local pid
  if pid="$(pid_from_file "$K_PIDFILE")" && pid_cmdline_has "$pid" "$K_CONF"; then
    printf '%s\n' "$pid"; return 0
  fi
  local d
  for d in /proc/[0-9]*; do
    pid="${d#/proc/}"
    if pid_cmdline_has "$pid" "kafka.Kafka $K_CONF"; then
      printf '%s\n' "$pid" >"$K_PIDFILE"
      printf '%s\n' "$pid"; return 0
    fi
  done
  return 1
}

probe() { # probe <python>: one metadata round trip
  "$1" - "$K_HOST:$K_PORT" <<'EOF' >/dev/null 2>"$ADSMON_RUN_DIR/kafka.probe.err"
import logging, sys
logging.disable(logging.CRITICAL)
from kafka import KafkaAdminClient
a = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id="adsmon-ready",
                     request_timeout_ms=5000)
try:
    a.list_topics()
    a.describe_cluster()
finally:
    a.close()
EOF
}

wait_ready() { # wait_ready <pid> <log offset>
  local pid="$1" off="$2" py i=0
  wait_for_port "$K_HOST" "$K_PORT" 120 "$pid" "$K_LOG"
  py="$(find_kafka_python)"
  [ -n "$py" ] || info "no python with kafka-python (.venv): readiness from the log line only"
  while :; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$K_LOG" >&2; die "broker exited during startup (log: $K_LOG)"; }
    if [ -n "$py" ]; then
      probe "$py" && return 0
    else
      tail -c "+$((off + 1))" "$K_LOG" 2>/dev/null | grep -q 'Kafka Server started' && return 0
    fi
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
      tail -n 20 "$K_LOG" >&2
      tail -n 5 "$ADSMON_RUN_DIR/kafka.probe.err" >&2 2>/dev/null || true
      info "broker not answering metadata requests after ~120s (log: $K_LOG)"
      return 1
    fi
    sleep 0.5
  done
}

cmd_start() {
  ensure_dirs
  svc_lock kafka
  local pid java off
  if pid="$(running_pid)"; then
    wait_ready "$pid" 0 || die "broker (pid $pid) is running but not answering; try '$0 restart'"
  else
    port_open "$K_HOST" "$K_PORT" && die "port $K_HOST:$K_PORT is in use by another process (set ADSMON_KAFKA_PORT)"
    port_open "$K_HOST" "$K_CPORT" && die "port $K_HOST:$K_CPORT is in use by another process (set ADSMON_KAFKA_CONTROLLER_PORT)"
    java="$(find_java)"
    cmd_install
    write_config
    format_storage "$java"
    touch "$K_LOG"
    off="$(stat -c %s "$K_LOG")"
    info "starting Kafka $K_VERSION on $K_HOST:$K_PORT (controller $K_CPORT, data $K_DATA, log $K_LOG)"
    local -a cmd
    mapfile -d '' cmd < <(java_cmd "$java" kafka.Kafka "$K_CONF")
    (cd "$K_HOME" && exec setsid "${cmd[@]}" >>"$K_LOG" 2>&1 </dev/null 8>&-) &
    pid=$!
    printf '%s\n' "$pid" >"$K_PIDFILE"
    if ! wait_ready "$pid" "$off"; then
      stop_pid "$pid" 20 kafka
      rm -f "$K_PIDFILE"
      die "broker did not become ready; stopped it (log: $K_LOG)"
    fi
  fi
  env_set "ADSMON_KAFKA_BOOTSTRAP=$K_HOST:$K_PORT"
  info "ready on $K_HOST:$K_PORT (pid $pid)"
}

do_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$K_PIDFILE"
    info "not running"
    return 1
  fi
  info "stopping (pid $pid, SIGTERM, SIGKILL after ${K_STOP_TIMEOUT}s)"
  stop_pid "$pid" "$K_STOP_TIMEOUT" kafka
  rm -f "$K_PIDFILE"
  info "stopped"
}

cmd_stop() {
  ensure_dirs
  svc_lock kafka
  do_stop || true
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    echo "kafka: running (pid $pid) on $K_HOST:$K_PORT, version $K_VERSION, data $K_DATA"
  else
    echo "kafka: stopped (data $K_DATA)"
    return 3
  fi
}

cmd_reset() {
  ensure_dirs
  svc_lock kafka
  local was=0
  do_stop && was=1
  info "wiping $K_DATA"
  rm -rf "$K_DATA"
  exec 8>&- # release the lock; start takes it again
  if [ "$was" = 1 ]; then cmd_start; fi
}

case "${1:-}" in
  install) ensure_dirs; svc_lock kafka; cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  reset) cmd_reset ;;
  smoke)
    shift
    py="$(find_kafka_python)"
    [ -n "$py" ] || die "no python with kafka-python: create .venv (or set ADSMON_PYTHON)"
    exec "$py" "$K_SRC/smoke.py" --bootstrap "$K_HOST:$K_PORT" "$@" ;;
  *) usage_die "install|start|stop|status|restart|reset|smoke" ;;
esac
