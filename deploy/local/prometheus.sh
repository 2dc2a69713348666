#!/usr/bin/env bash
# Local Prometheus for adsmon (our own process; the Debian system service is never started).
#
#   prometheus.sh install   apt-get install prometheus (+ promtool) if missing
#   prometheus.sh start     install if missing, check config, start on 127.0.0.1:9090, wait /-/ready
#   prometheus.sh stop      SIGTERM, wait, then SIGKILL
#   prometheus.sh status    exit 0 if running, 3 if not
#   prometheus.sh reload    promtool check config, then SIGHUP
#
# Env: ADSMON_LOCAL, ADSMON_PROM_CONFIG (deploy/prometheus/prometheus.yml, relative to the repo),
#      ADSMON_PROM_PORT (9090), ADSMON_PROM_RETENTION (2d).
set -euo pipefail
ADSMON_SVC=prometheus
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

P_HOST=127.0.0.1
P_PORT="${ADSMON_PROM_PORT:-9090}"
P_CONFIG="${ADSMON_PROM_CONFIG:-deploy/prometheus/prometheus.yml}"
case "$P_CONFIG" in /*) ;; *) P_CONFIG="$ADSMON_ROOT/$P_CONFIG" ;; esac
P_HOME="$ADSMON_LOCAL/prometheus"
P_DATA="$P_HOME/data"
P_LOG="$ADSMON_LOG_DIR/prometheus.log"
P_PIDFILE="$ADSMON_RUN_DIR/prometheus.pid"
P_RETENTION="${ADSMON_PROM_RETENTION:-2d}"

have_bins() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=120 prometheus >>"$P_LOG" 2>&1
}

cmd_install() {
  ensure_dirs
  have_bins && return 0
  is_root || die "prometheus not installed: sudo apt-get install --no-install-recommends prometheus"
  need_cmd apt-get "this script installs Prometheus with Debian's apt-get"
  info "installing Debian package prometheus (log: $P_LOG)"
  # Keep the package's postinst from starting the system service: we run our own process.
  P_POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$P_POLICY" ]; then
    trap 'rm -f "$P_POLICY"' EXIT
    printf '#!/bin/sh\nexit 101\n' >"$P_POLICY"
    chmod 755 "$P_POLICY"
    P_POLICY_OURS=1
  fi
  if ! apt_install; then
    info "apt-get install failed; running apt-get update once and retrying"
    DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=120 >>"$P_LOG" 2>&1 \
      || { tail -n 10 "$P_LOG" >&2; die "apt-get update failed (log: $P_LOG)"; }
    apt_install || { tail -n 10 "$P_LOG" >&2; die "apt-get install prometheus failed (log: $P_LOG)"; }
  fi
  if [ "${P_POLICY_OURS:-0}" = 1 ]; then rm -f "$P_POLICY"; trap - EXIT; fi
  have_bins || die "prometheus/promtool still not on PATH after apt-get install prometheus"
  info "installed $(prometheus --version 2>&1 | head -n1)"
}

running_pid() {
  local pid
  pid="$(pid_from_file "$P_PIDFILE")" && pid_cmdline_has "$pid" "--storage.tsdb.path=$P_DATA" || return 1
  printf '%s\n' "$pid"
}

http_ok() { # http_ok <url>
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
  else
    port_open "$P_HOST" "$P_PORT"
  fi
}

wait_ready() {
  local pid="$1" i=0
  until http_ok "http://$P_HOST:$P_PORT/-/ready"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$P_LOG" >&2; die "prometheus exited during startup (log: $P_LOG)"; }
    i=$((i + 1))
    [ "$i" -le 300 ] || { tail -n 20 "$P_LOG" >&2; die "prometheus not ready after 60s (log: $P_LOG)"; }
    sleep 0.2
  done
}

check_config() {
  [ -f "$P_CONFIG" ] || die "prometheus config not found: $P_CONFIG (set ADSMON_PROM_CONFIG or add deploy/prometheus/prometheus.yml)"
  local out
  out="$(promtool check config "$P_CONFIG" 2>&1)" || { printf '%s\n' "$out" >&2; die "invalid prometheus config: $P_CONFIG"; }
}

cmd_start() {
  ensure_dirs
  svc_lock prometheus
  local pid
  if pid="$(running_pid)"; then
    pid_cmdline_has "$pid" "--config.file=$P_CONFIG" \
      || info "running with a different --config.file than $P_CONFIG (restart to switch)"
    wait_ready "$pid"
  else
    cmd_install
    check_config
    port_open "$P_HOST" "$P_PORT" && die "port $P_HOST:$P_PORT is in use by another process (set ADSMON_PROM_PORT; is the system prometheus service running?)"
    mkdir -p "$P_DATA"
    touch "$P_LOG"
    info "starting on $P_HOST:$P_PORT (config $P_CONFIG, data $P_DATA, log $P_LOG)"
    (cd "$P_HOME" && exec setsid prometheus \
      --config.file="$P_CONFIG" \
      --storage.tsdb.path="$P_DATA" \
      --storage.tsdb.retention.time="$P_RETENTION" \
      --web.listen-address="$P_HOST:$P_PORT" \
      --web.enable-lifecycle \
      >>"$P_LOG" 2>&1 </dev/null 8>&-) &
    pid=$!
    printf '%s\n' "$pid" >"$P_PIDFILE"
    wait_ready "$pid"
  fi
  info "ready on http://$P_HOST:$P_PORT (pid $pid)"
}

cmd_stop() {
  ensure_dirs
  svc_lock prometheus
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$P_PIDFILE"
    info "not running"
    return 0
  fi
  info "stopping (pid $pid)"
  stop_pid "$pid" 30 prometheus
  rm -f "$P_PIDFILE"
  info "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    echo "prometheus: running (pid $pid) on $P_HOST:$P_PORT, config $P_CONFIG"
  else
    echo "prometheus: stopped"
    return 3
  fi
}

cmd_reload() {
  local pid
  pid="$(running_pid)" || die "not running: $0 start"
  check_config
  kill -HUP "$pid"
  info "reloaded $P_CONFIG (pid $pid)"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  reload) cmd_reload ;;
  *) usage_die "install|start|stop|status|restart|reload" ;;
esac
