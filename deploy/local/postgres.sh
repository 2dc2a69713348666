#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119,SC2120
# Local PostgreSQL 15 cluster for adsmon (connects, ads, billing databases).
#
#   postgres.sh start        initdb if needed, start, wait ready, create roles/dbs, write env
#   postgres.sh stop         fast shutdown
#   postgres.sh status       exit 0 if running, 3 if not
#   postgres.sh pgbench-env  print exports (PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE) for adsmon_admin
#   postgres.sh psql [args]  psql as adsmon_admin (db postgres unless args say otherwise)
#
# Env: ADSMON_LOCAL, ADSMON_PG_PORT (55432), ADSMON_PG_BIN (/usr/lib/postgresql/15/bin),
#      ADSMON_PG_BASE (force the cluster directory; see README.md).
set -euo pipefail
ADSMON_SVC=postgres
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_PORT="${ADSMON_PG_PORT:-55432}"
PG_HOST=127.0.0.1
PG_BIN="${ADSMON_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_OS_USER=postgres
PG_LOG="$ADSMON_LOG_DIR/postgres.log"
PG_PIDFILE="$ADSMON_RUN_DIR/postgres.pid"
PG_SECRETS="$ADSMON_SECRETS_DIR/pg_passwords"
PG_ROLES=(connects ads billing)
PG_ADMIN=adsmon_admin

check_bins() {
  local b
  for b in initdb postgres pg_ctl pg_isready psql; do
    [ -x "$PG_BIN/$b" ] || die "PostgreSQL 15 server not found ($PG_BIN/$b): apt-get install postgresql-15"
  done
}

# Run a command as the cluster owner (postgres refuses to run as root).
as_owner() {
  if is_root; then
    (cd / && setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups \
      env HOME=/tmp PGSYSCONFDIR=/nonexistent "$@")
  else
    "$@"
  fi
}

ensure_os_user() {
  is_root || return 0
  if ! getent passwd "$PG_OS_USER" >/dev/null; then
    info "creating OS user $PG_OS_USER"
    useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
      --shell /usr/sbin/nologin "$PG_OS_USER" || die "could not create OS user $PG_OS_USER"
  fi
}

# Where the cluster lives. Default $ADSMON_LOCAL/pg. If, running as root, the postgres
# OS user cannot traverse $ADSMON_LOCAL (e.g. repo under /root), or the unix socket
# path would be too long, the cluster goes to /var/tmp/adsmon-pg-<hash of $ADSMON_LOCAL>
# and $ADSMON_LOCAL/pg is a symlink to it. The choice sticks (the symlink records it).
choose_base() {
  local link="$ADSMON_LOCAL/pg"
  if [ -n "${ADSMON_PG_BASE:-}" ]; then
    PG_BASE="$ADSMON_PG_BASE"
  elif [ -L "$link" ]; then
    PG_BASE="$(readlink "$link")"
  elif [ -d "$link" ]; then
    PG_BASE="$link"
  else
    PG_BASE="$link"
    local sock_path="$link/sock/.s.PGSQL.$PG_PORT"
    if [ "${#sock_path}" -gt 100 ] || { is_root && ! as_owner test -x "$ADSMON_LOCAL" 2>/dev/null; }; then
      local h
      h="$(printf '%s' "$ADSMON_LOCAL" | sha256sum | cut -c1-12)"
      PG_BASE="/var/tmp/adsmon-pg-$h"
      info "postgres user cannot use $link directly; cluster goes to $PG_BASE (symlinked)"
      mkdir -p "$PG_BASE"
      ln -sfn "$PG_BASE" "$link"
    fi
  fi
  PG_DATA="$PG_BASE/data"
  PG_SOCK="$PG_BASE/sock"
}

prepare_base() {
  mkdir -p "$PG_BASE" "$PG_SOCK"
  if is_root; then
    [ ! -L "$PG_BASE" ] || die "$PG_BASE must not be a symlink"
    chown "$PG_OS_USER:$PG_OS_USER" "$PG_BASE" "$PG_SOCK"
    [ -d "$PG_DATA" ] && chown -R "$PG_OS_USER:$PG_OS_USER" "$PG_DATA"
  fi
  chmod 700 "$PG_BASE" "$PG_SOCK"
  as_owner test -w "$PG_BASE" || die "OS user $PG_OS_USER cannot write $PG_BASE (set ADSMON_PG_BASE to a directory it can reach)"
}

ensure_secrets() {
  ensure_dirs
  local r
  ( umask 077; touch "$PG_SECRETS" )
  chmod 600 "$PG_SECRETS"
  for r in "${PG_ROLES[@]}" "$PG_ADMIN"; do
    grep -q "^$r=" "$PG_SECRETS" || printf '%s=%s\n' "$r" "$(random_secret)" >>"$PG_SECRETS"
  done
}

secret_of() { # secret_of <role>
  local v
  v="$(sed -n "s/^$1=//p" "$PG_SECRETS" 2>/dev/null | head -n1)"
  [ -n "$v" ] || die "no password for role $1 in $PG_SECRETS (run: $0 start)"
  printf '%s\n' "$v"
}

init_cluster() {
  [ -f "$PG_DATA/PG_VERSION" ] && return 0
  info "initdb $PG_DATA"
  rm -rf "$PG_DATA"
  if ! as_owner "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1; then
    tail -n 20 "$PG_LOG" >&2
    die "initdb failed (log: $PG_LOG)"
  fi
}

write_config() {
  local conf="$PG_DATA/adsmon.conf" tmp
  tmp="$(mktemp)"
  cat >"$tmp" <<EOF
# Written by deploy/local/postgres.sh on every start; edits are overwritten.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 256MB
# durability stays on: benchmarks here must be honest
fsync = on
synchronous_commit = on
full_page_writes = on
password_encryption = scram-sha-256
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  install -m 600 "$tmp" "$conf"
  rm -f "$tmp"
  cat >"$PG_DATA/pg_hba.conf" <<EOF
# Written by deploy/local/postgres.sh. The socket dir is mode 700 (cluster owner/root only).
local   all   all                 trust
host    all   all   127.0.0.1/32  scram-sha-256
EOF
  grep -q "^include_if_exists = 'adsmon.conf'" "$PG_DATA/postgresql.conf" \
    || printf "\ninclude_if_exists = 'adsmon.conf'\n" >>"$PG_DATA/postgresql.conf"
  is_root && chown "$PG_OS_USER:$PG_OS_USER" "$conf" "$PG_DATA/pg_hba.conf" "$PG_DATA/postgresql.conf"
  return 0
}

# Prints the postmaster pid if our cluster is running.
running_pid() {
  local pid
  [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ] || return 1
  pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9')"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && pid_cmdline_has "$pid" "postgres" || return 1
  printf '%s\n' "$pid"
}

running_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9'; }

wait_ready() {
  local pid="$1" i=0
  until "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 1; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$PG_LOG" >&2; die "postgres exited during startup (log: $PG_LOG)"; }
    i=$((i + 1))
    [ "$i" -le 300 ] || { tail -n 30 "$PG_LOG" >&2; die "postgres not ready after 60s (log: $PG_LOG)"; }
    sleep 0.2
  done
}

psql_super() { # SQL on stdin, as the bootstrap superuser over the private socket
  as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"
}

provision() {
  local r out
  # Passwords travel on stdin only (never argv, never printed).
  if ! out="$({
    for r in "${PG_ROLES[@]}"; do
      cat <<EOF
SELECT 'CREATE ROLE $r LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$r') \\gexec
ALTER ROLE $r WITH LOGIN NOSUPERUSER PASSWORD '$(secret_of "$r")';
SELECT 'CREATE DATABASE $r OWNER $r' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$r') \\gexec
ALTER DATABASE $r OWNER TO $r;
EOF
    done
    cat <<EOF
SELECT 'CREATE ROLE $PG_ADMIN LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_ADMIN') \\gexec
ALTER ROLE $PG_ADMIN WITH LOGIN CREATEDB CREATEROLE NOSUPERUSER PASSWORD '$(secret_of "$PG_ADMIN")';
EOF
  } | psql_super 2>&1)"; then
    printf '%s\n' "$out" | sed -E "s/PASSWORD '[^']*'/PASSWORD '***'/g" >&2
    die "creating roles/databases failed"
  fi
}

write_env() {
  local r kv=()
  for r in "${PG_ROLES[@]}"; do
    kv+=("ADSMON_$(printf '%s' "$r" | tr '[:lower:]' '[:upper:]')_DATABASE_URL=postgresql+psycopg://$r:$(secret_of "$r")@$PG_HOST:$PG_PORT/$r")
  done
  kv+=("ADSMON_ADMIN_DATABASE_URL=postgresql+psycopg://$PG_ADMIN:$(secret_of "$PG_ADMIN")@$PG_HOST:$PG_PORT/postgres")
  kv+=("ADSMON_PG_PORT=$PG_PORT")
  env_set "${kv[@]}"
}

cmd_start() {
  check_bins
  ensure_dirs
  svc_lock postgres
  ensure_os_user
  choose_base
  ensure_secrets
  local pid
  if pid="$(running_pid)"; then
    [ "$(running_port)" = "$PG_PORT" ] \
      || die "cluster $PG_DATA is running on port $(running_port), not $PG_PORT: run '$0 stop' first"
    wait_ready "$pid"
  else
    port_open "$PG_HOST" "$PG_PORT" && die "port $PG_HOST:$PG_PORT is in use by another process (set ADSMON_PG_PORT)"
    prepare_base
    init_cluster
    write_config
    touch "$PG_LOG"
    info "starting on $PG_HOST:$PG_PORT (data $PG_DATA, log $PG_LOG)"
    if is_root; then
      (cd / && exec setsid setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups \
        "$PG_BIN/postgres" -D "$PG_DATA" >>"$PG_LOG" 2>&1 </dev/null 8>&-) &
    else
      (cd / && exec setsid "$PG_BIN/postgres" -D "$PG_DATA" >>"$PG_LOG" 2>&1 </dev/null 8>&-) &
    fi
    pid=$!
    wait_ready "$pid"
    pid="$(running_pid)" || die "postgres is answering but postmaster.pid is missing (log: $PG_LOG)"
  fi
  printf '%s\n' "$pid" >"$PG_PIDFILE"
  provision
  write_env
  info "ready on $PG_HOST:$PG_PORT (pid $pid); URLs in $ADSMON_ENV_FILE"
}

cmd_stop() {
  ensure_dirs
  svc_lock postgres
  choose_base
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PG_PIDFILE"
    info "not running"
    return 0
  fi
  info "stopping (pid $pid)"
  if ! as_owner "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >>"$PG_LOG" 2>&1; then
    info "fast shutdown timed out: immediate shutdown"
    kill -QUIT "$pid" 2>/dev/null || true
    stop_pid "$pid" 10 postgres
  fi
  rm -f "$PG_PIDFILE"
  info "stopped"
}

cmd_status() {
  choose_base
  local pid
  if pid="$(running_pid)"; then
    echo "postgres: running (pid $pid) on $PG_HOST:$(running_port), data $PG_DATA"
  else
    echo "postgres: stopped (data $PG_DATA)"
    return 3
  fi
}

cmd_pgbench_env() {
  [ -s "$PG_SECRETS" ] || die "no $PG_SECRETS yet: run '$0 start' first"
  printf 'export PATH=%q:"$PATH"\n' "$PG_BIN"
  printf 'export PGHOST=%s PGPORT=%s PGUSER=%s PGDATABASE=postgres\n' "$PG_HOST" "$PG_PORT" "$PG_ADMIN"
  printf 'export PGPASSWORD=%s\n' "$(secret_of "$PG_ADMIN")"
}

cmd_psql() {
  [ -s "$PG_SECRETS" ] || die "no $PG_SECRETS yet: run '$0 start' first"
  PGPASSWORD="$(secret_of "$PG_ADMIN")" exec "$PG_BIN/psql" -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ADMIN" -d postgres "$@"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  pgbench-env) cmd_pgbench_env ;;
  psql) shift; cmd_psql "$@" ;;
  *) usage_die "start|stop|status|restart|pgbench-env|psql [args]" ;;
esac
