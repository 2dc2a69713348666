# shellcheck shell=bash
# shellcheck disable=SC2015,SC2174
# Shared helpers for deploy/local/*.sh. Source it, do not run it.
#
# Paths:
#   ADSMON_ROOT   repository root (derived from this file's location)
#   ADSMON_LOCAL  all local state (default $ADSMON_ROOT/.local, gitignored)
#     log/<name>.log   service logs
#     run/<name>.pid   pid files
#     secrets/         generated passwords (mode 700/600)
#     env              KEY=value lines other scripts `source` (mode 600)

set -euo pipefail

ADSMON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
ADSMON_LOCAL="${ADSMON_LOCAL:-$ADSMON_ROOT/.local}"
case "$ADSMON_LOCAL" in /*) ;; *) ADSMON_LOCAL="$ADSMON_ROOT/$ADSMON_LOCAL" ;; esac
# One spelling of the state directory (a symlinked .local included), so a broker or cluster started from
# one checkout is recognised as ours from another: the scripts find their processes by config path.
ADSMON_LOCAL="$(realpath -m "$ADSMON_LOCAL")"
export ADSMON_ROOT ADSMON_LOCAL

ADSMON_LOG_DIR="$ADSMON_LOCAL/log"
ADSMON_RUN_DIR="$ADSMON_LOCAL/run"
ADSMON_SECRETS_DIR="$ADSMON_LOCAL/secrets"
ADSMON_ENV_FILE="$ADSMON_LOCAL/env"

# Name used in messages; each script sets it before sourcing or right after.
ADSMON_SVC="${ADSMON_SVC:-local}"

_ts() { date '+%H:%M:%S'; }
info() { printf '[%s] %s: %s\n' "$(_ts)" "$ADSMON_SVC" "$*" >&2; }
die() { printf '[%s] %s: ERROR: %s\n' "$(_ts)" "$ADSMON_SVC" "$*" >&2; exit 1; }

ensure_dirs() {
  umask 022
  mkdir -p "$ADSMON_LOCAL" "$ADSMON_LOG_DIR" "$ADSMON_RUN_DIR"
  mkdir -p -m 700 "$ADSMON_SECRETS_DIR"
  chmod 700 "$ADSMON_SECRETS_DIR"
}

need_cmd() { # need_cmd <cmd> <hint>
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Java 17+ (JAVA, then JAVA_HOME, then PATH).
find_java() {
  local j="${JAVA:-}"
  if [ -z "$j" ] && [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then j="$JAVA_HOME/bin/java"; fi
  if [ -z "$j" ]; then j="$(command -v java 2>/dev/null || true)"; fi
  [ -n "$j" ] && [ -x "$j" ] || die "java 17+ not found: apt-get install openjdk-17-jre-headless"
  local v
  v="$("$j" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  [ -n "$v" ] && [ "$v" -ge 17 ] 2>/dev/null \
    || die "java 17+ not found ($j is version ${v:-unknown}): apt-get install openjdk-17-jre-headless"
  printf '%s\n' "$j"
}

# Python with kafka-python, for readiness checks (empty if none).
find_kafka_python() {
  local p
  for p in "${ADSMON_PYTHON:-}" "$ADSMON_ROOT/.venv/bin/python"; do
    [ -n "$p" ] && [ -x "$p" ] || continue
    if "$p" -c 'import kafka' >/dev/null 2>&1; then printf '%s\n' "$p"; return 0; fi
  done
  return 0
}

port_open() { # port_open <host> <port>
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for_port <host> <port> <timeout_s> [pid] [logfile]
# Fails early when pid dies; shows the log tail on failure.
wait_for_port() {
  local host="$1" port="$2" timeout="$3" pid="${4:-}" logf="${5:-}" i=0
  while ! port_open "$host" "$port"; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      [ -n "$logf" ] && tail -n 30 "$logf" >&2 || true
      die "process $pid exited before $host:$port opened (log: ${logf:-n/a})"
    fi
    i=$((i + 1))
    if [ "$i" -gt $((timeout * 5)) ]; then
      [ -n "$logf" ] && tail -n 30 "$logf" >&2 || true
      die "timed out after ${timeout}s waiting for $host:$port (log: ${logf:-n/a})"
    fi
    sleep 0.2
  done
}

# pid_from_file <pidfile>: prints the pid if the file names a live process.
pid_from_file() {
  local f="$1" pid
  [ -s "$f" ] || return 1
  pid="$(head -n1 "$f" | tr -dc '0-9')"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

# pid_cmdline_has <pid> <substring>: guards against recycled pids.
pid_cmdline_has() {
  local c
  c="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  case "$c" in *"$2"*) return 0 ;; *) return 1 ;; esac
}

# stop_pid <pid> <timeout_s> <name>: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid="$1" timeout="$2" name="$3" i=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt $((timeout * 5)) ]; then
      info "$name (pid $pid) still running after ${timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
}

random_secret() { # 32 hex chars: safe in URLs, shell and SQL literals
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

# env_set KEY=VALUE ...: replace only these keys in $ADSMON_ENV_FILE (locked, atomic, mode 600).
env_set() {
  ensure_dirs
  local lock="$ADSMON_RUN_DIR/env.lock" kv key tmp
  (
    flock -w 30 9 || die "could not lock $lock"
    umask 077
    tmp="$(mktemp "$ADSMON_ENV_FILE.XXXXXX")"
    [ -f "$ADSMON_ENV_FILE" ] && cat "$ADSMON_ENV_FILE" >"$tmp"
    for kv in "$@"; do
      key="${kv%%=*}"
      grep -v -E "^(export )?${key}=" "$tmp" >"$tmp.n" || true
      printf '%s\n' "$kv" >>"$tmp.n"
      mv -f "$tmp.n" "$tmp"
    done
    chmod 600 "$tmp"
    mv -f "$tmp" "$ADSMON_ENV_FILE"
  ) 9>"$lock"
}

# Serialise start/stop of one service (make run + make test in parallel).
svc_lock() { # svc_lock <name>
  ensure_dirs
  exec 8>"$ADSMON_RUN_DIR/$1.lock"
  flock -w 300 8 || die "another $1 start/stop is still running (lock $ADSMON_RUN_DIR/$1.lock)"
}

usage_die() { die "usage: $0 $1"; }
