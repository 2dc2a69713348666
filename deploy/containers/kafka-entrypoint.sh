#!/bin/bash
# Entry point of the local Kafka image (kafka.Containerfile): KAFKA_<NAME>=v ->
# <name>=v in server.properties (as the apache/kafka image does), format the
# KRaft storage once, exec the broker in the foreground.
set -euo pipefail
conf=/opt/kafka/config/server.properties
: >"$conf"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_PERFORMANCE_OPTS) continue ;;
    KAFKA_*) key="${name#KAFKA_}"; key="${key,,}"; printf '%s=%s\n' "${key//_/.}" "$value" >>"$conf" ;;
  esac
done < <(env)
grep -q '^log.dirs=' "$conf" || echo "log.dirs=/var/lib/kafka/data" >>"$conf"
java_cmd=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -server -XX:+UseG1GC -Djava.awt.headless=true
          -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml -cp '/opt/kafka/libs/*')
data="$(sed -n 's/^log.dirs=//p' "$conf" | cut -d, -f1)"
if [ ! -f "$data/meta.properties" ]; then
  cid="${CLUSTER_ID:-$("${java_cmd[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tr -d '[:space:]')}"
  "${java_cmd[@]}" kafka.tools.StorageTool format -t "$cid" -c "$conf" --ignore-formatted
fi
exec "${java_cmd[@]}" kafka.Kafka "$conf"
