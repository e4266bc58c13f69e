#!/usr/bin/env bash
# Makes sure PostgreSQL and a JetStream-enabled nats-server answer where DATABASE_URL and
# NATS_URL point, starting project-local ones under .local/ when nothing answers there.
#
#   scripts/services.sh up     reuse what answers, otherwise install what is missing and start
#   scripts/services.sh down   stop only what this script started (.local/); never system services
#   scripts/services.sh env    print export lines for DATABASE_URL and NATS_URL
#
# Defaults: DATABASE_URL=postgres://postgres@127.0.0.1:5432/runwatch
#           NATS_URL=nats://127.0.0.1:4222
# One line per service goes to stdout; progress and install noise go to stderr.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NATS_DIR="$RW_LOCAL/nats"
NATS_PID="$NATS_DIR/nats-server.pid"
NATS_LOG="$NATS_DIR/nats.log"
WAIT_SECS="${RUNWATCH_SERVICE_WAIT:-30}"

rel() { printf '%s\n' "${1#"$RW_ROOT"/}"; }

lock() {
  mkdir -p "$RW_LOCAL"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$RW_LOCAL/.services.lock"
    flock -w 300 9 || die "another scripts/services.sh is still running"
  fi
}

# Children that outlive this script (postgres, nats-server) are started with 9>&- so that
# they do not keep holding the lock.

# ================================================================ PostgreSQL

parse_pg() {
  parse_url "$DATABASE_URL" 5432
  PG_HOST="$URL_HOST"; PG_PORT="$URL_PORT"
  PG_USER="${URL_USER:-postgres}"; PG_PASS="$URL_PASS"
  PG_DB="$(urldecode "${URL_PATH%%/*}")"; PG_DB="${PG_DB:-$PG_USER}"
}

# Where the project-local cluster lives. .local/pg unless the postgres OS user cannot reach
# the checkout (e.g. a clone under /root, mode 700); then a folder under /tmp.
pg_dir_fallback() { printf '/tmp/runwatch-pg-%s\n' "$(printf '%s' "$RW_ROOT" | cksum | cut -d' ' -f1)"; }

pg_dir_existing() {   # for down/status: whichever one has a cluster
  local d
  for d in "${RUNWATCH_PG_DIR:-}" "$RW_LOCAL/pg" "$(pg_dir_fallback)"; do
    [ -n "$d" ] && [ -f "$d/data/PG_VERSION" ] && { printf '%s\n' "$d"; return 0; }
  done
  return 1
}

pg_dir_prepare() {
  local d
  if d="$(pg_dir_existing)"; then printf '%s\n' "$d"; return 0; fi
  for d in "${RUNWATCH_PG_DIR:-}" "$RW_LOCAL/pg" "$(pg_dir_fallback)"; do
    [ -n "$d" ] || continue
    mkdir -p "$d"
    is_root && chown postgres: "$d"
    if as_pg test -w "$d" -a -x "$d" 2>/dev/null; then printf '%s\n' "$d"; return 0; fi
    log "the postgres OS user cannot write $d; trying elsewhere"
  done
  die "no folder for a local PostgreSQL cluster"
}

# pg_ready: 0 ready, 1 something answers but is not ready (starting up), 2 nothing answers
pg_ready() {
  local rc=0
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3 >/dev/null 2>&1 || rc=$?
    case "$rc" in
      0) return 0 ;;
      1) return 1 ;;
      2) return 2 ;;
    esac
  fi
  tcp_probe "$PG_HOST" "$PG_PORT" && return 0
  return 2
}

pg_wait_ready() {
  local i
  for ((i = 0; i < WAIT_SECS * 2; i++)); do
    pg_ready && return 0
    sleep 0.5
  done
  return 1
}

psql_bin() {
  local d
  if command -v psql >/dev/null 2>&1; then command -v psql; return 0; fi
  if d="$(find_pg_bin_dir)" && [ -x "$d/psql" ]; then printf '%s\n' "$d/psql"; return 0; fi
  apt_install postgresql-client
  command -v psql
}

# psql_admin SQL: run SQL against the 'postgres' database as the URL's user
psql_admin() {
  PGPASSWORD="$PG_PASS" PGCONNECT_TIMEOUT=5 "$(psql_bin)" -X -q -v ON_ERROR_STOP=1 -At \
    -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "$1" </dev/null
}

# Create the database named in DATABASE_URL if it is missing (harmless when it exists).
pg_ensure_db() {
  local out q="${PG_DB//\'/\'\'}" ident="${PG_DB//\"/\"\"}"
  if ! out="$(psql_admin "select 1 from pg_database where datname = '$q'" 2>&1)"; then
    log "warning: could not connect to PostgreSQL as '$PG_USER' to check database '$PG_DB': $out"
    return 1
  fi
  if [ "$out" != 1 ]; then
    psql_admin "create database \"$ident\"" >&2 || { log "warning: could not create database '$PG_DB'"; return 1; }
    log "created database '$PG_DB'"
  fi
}

pg_local_running() {   # DIR [PORT]: 0 when our cluster in DIR runs (on PORT, if given)
  local bin
  [ -f "$1/data/postmaster.pid" ] || return 1
  bin="$(find_pg_bin_dir "$(cat "$1/data/PG_VERSION")")" || return 1
  as_pg "$bin/pg_ctl" -D "$1/data" status >/dev/null 2>&1 || return 1
  [ -z "${2:-}" ] || [ "$(sed -n 4p "$1/data/postmaster.pid")" = "$2" ]
}

pg_up() {
  parse_pg
  local state=0 dir bin ver sockdir
  pg_ready || state=$?
  if [ "$state" -eq 1 ]; then
    log "PostgreSQL at $PG_HOST:$PG_PORT is starting up; waiting"
    pg_wait_ready && state=0
  fi
  if [ "$state" -eq 0 ]; then
    pg_ensure_db || true
    if dir="$(pg_dir_existing)" && pg_local_running "$dir" "$PG_PORT"; then
      echo "postgres: reused $PG_HOST:$PG_PORT (local cluster $(rel "$dir")/data, started earlier by this script)"
    else
      echo "postgres: reused $PG_HOST:$PG_PORT"
    fi
    return 0
  fi

  # Nothing answers: start a project-local cluster.
  if [ -f "$RW_LOCAL/pg/data/PG_VERSION" ]; then ver="$(cat "$RW_LOCAL/pg/data/PG_VERSION")"; else ver=""; fi
  bin="$(ensure_pg_bin_dir "$ver")"
  # apt may have brought up a server (where policy-rc.d did not stop it): look again
  if pg_ready; then
    pg_ensure_db || true
    echo "postgres: reused $PG_HOST:$PG_PORT (answered after installing PostgreSQL)"
    return 0
  fi
  ensure_pg_os_user
  dir="$(pg_dir_prepare)"
  if [ -f "$dir/data/PG_VERSION" ]; then
    ver="$(cat "$dir/data/PG_VERSION")"
    bin="$(find_pg_bin_dir "$ver")" || die "the cluster in $dir/data is PostgreSQL $ver, whose binaries are missing: remove $dir and run again"
    if pg_local_running "$dir"; then
      die "the local cluster in $dir/data already runs, but not at $PG_HOST:$PG_PORT: run 'scripts/services.sh down' first"
    fi
  else
    log "+ initdb $dir/data"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
      </dev/null >"$dir/initdb.log" 2>&1 || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed (log $dir/initdb.log)"; }
  fi
  ver="$(cat "$dir/data/PG_VERSION")"

  sockdir="$dir/run"
  if [ "$(printf '%s/.s.PGSQL.%s' "$sockdir" "$PG_PORT" | wc -c)" -ge 100 ]; then
    sockdir="$(pg_dir_fallback)-run"      # unix socket paths must stay under ~107 bytes
  fi
  mkdir -p "$sockdir"
  is_root && chown postgres: "$sockdir"

  log "+ pg_ctl start ($PG_HOST:$PG_PORT)"
  if ! as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$WAIT_SECS" \
      -o "-c listen_addresses='$PG_HOST' -p $PG_PORT -k '$sockdir'" start </dev/null >&2 9>&-; then
    tail -n 20 "$dir/postgres.log" >&2 || true
    die "PostgreSQL did not start (log $dir/postgres.log)"
  fi
  pg_wait_ready || die "PostgreSQL started but does not answer at $PG_HOST:$PG_PORT"

  if [ "$PG_USER" != postgres ]; then   # initdb made 'postgres' the superuser
    local r="${PG_USER//\'/\'\'}" ident="${PG_USER//\"/\"\"}"
    PGCONNECT_TIMEOUT=5 "$(psql_bin)" -X -q -At -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres </dev/null \
      -c "do \$\$ begin if not exists (select 1 from pg_roles where rolname = '$r') then create role \"$ident\" superuser login; end if; end \$\$" >&2 \
      || die "could not create role '$PG_USER'"
  fi
  pg_ensure_db || die "could not create database '$PG_DB' in the local cluster"
  echo "postgres: started (PostgreSQL $ver, cluster $(rel "$dir")/data, $PG_HOST:$PG_PORT, log $(rel "$dir")/postgres.log)"
}

pg_down() {
  local dir bin
  if ! dir="$(pg_dir_existing)"; then echo "postgres: nothing to stop (no local cluster)"; return 0; fi
  if ! pg_local_running "$dir"; then echo "postgres: nothing to stop (local cluster $(rel "$dir")/data is not running)"; return 0; fi
  bin="$(find_pg_bin_dir "$(cat "$dir/data/PG_VERSION")")"
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t "$WAIT_SECS" stop </dev/null >&2 \
    || die "pg_ctl stop failed for $dir/data"
  echo "postgres: stopped (local cluster $(rel "$dir")/data)"
}

# ================================================================ NATS

parse_nats() {
  parse_url "$NATS_URL" 4222
  NATS_HOST="$URL_HOST"; NATS_PORT="$URL_PORT"
}

# nats_info: print the server's INFO line; fail when nothing answers
nats_info() {
  local line
  # shellcheck disable=SC2016  # expanded by the inner bash
  line="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && IFS= read -r -t 2 l <&3 && printf "%s\n" "$l"' \
    "$NATS_HOST" "$NATS_PORT" 2>/dev/null)" || return 1
  printf '%s\n' "${line%$'\r'}"
}

nats_describe() {   # INFO line -> "nats-server 2.9.10, jetstream enabled"
  local info="$1" ver js="JetStream NOT enabled"
  ver="$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$info")"
  [[ "$info" == *'"jetstream":true'* ]] && js="jetstream enabled"
  printf 'nats-server %s, %s' "${ver:-?}" "$js"
}

nats_our_pid() {   # print the pid of the nats-server this script started, if it still runs
  local pid
  [ -f "$NATS_PID" ] || return 1
  pid="$(cat "$NATS_PID" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'nats-server' || return 1
  printf '%s\n' "$pid"
}

nats_up() {
  parse_nats
  local info pid bin i
  if info="$(nats_info)"; then
    if [[ "$info" != INFO* ]]; then
      die "something answers at $NATS_HOST:$NATS_PORT, but it is not a NATS server"
    fi
    [[ "$info" == *'"jetstream":true'* ]] || log "warning: the NATS server at $NATS_HOST:$NATS_PORT has JetStream disabled"
    if pid="$(nats_our_pid)"; then
      echo "nats: reused $NATS_HOST:$NATS_PORT ($(nats_describe "$info"); pid $pid, started earlier by this script)"
    else
      echo "nats: reused $NATS_HOST:$NATS_PORT ($(nats_describe "$info"))"
    fi
    return 0
  fi
  if pid="$(nats_our_pid)"; then
    die "the local nats-server (pid $pid) runs, but does not answer at $NATS_HOST:$NATS_PORT: run 'scripts/services.sh down' first"
  fi

  bin="$(ensure_nats_bin)"
  mkdir -p "$NATS_DIR/jetstream"
  log "+ $bin -a $NATS_HOST -p $NATS_PORT -js -sd $(rel "$NATS_DIR")/jetstream"
  # own session, no terminal, stdio to the log, lock fd closed: it outlives this script and
  # holds no pipe (nor the lock) open
  setsid "$bin" -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$NATS_DIR/jetstream" \
    </dev/null >>"$NATS_LOG" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$NATS_PID"
  for ((i = 0; i < WAIT_SECS * 4; i++)); do
    if info="$(nats_info)" && [[ "$info" == INFO* ]]; then
      echo "nats: started ($(nats_describe "$info"), $bin, $NATS_HOST:$NATS_PORT, pid $pid, log $(rel "$NATS_LOG"))"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$NATS_PID"
      tail -n 20 "$NATS_LOG" >&2 || true
      die "nats-server exited at once (log $NATS_LOG)"
    fi
    sleep 0.25
  done
  tail -n 20 "$NATS_LOG" >&2 || true
  die "nats-server (pid $pid) does not answer at $NATS_HOST:$NATS_PORT after ${WAIT_SECS}s (log $NATS_LOG)"
}

nats_down() {
  local pid i
  if ! pid="$(nats_our_pid)"; then
    rm -f "$NATS_PID"
    echo "nats: nothing to stop (no nats-server started by this script)"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$NATS_PID"
  echo "nats: stopped (pid $pid)"
}

# ================================================================ main

usage() {
  sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

cmd="${1:-}"
case "$cmd" in
  up)   lock; pg_up; nats_up ;;
  down) lock; pg_down; nats_down ;;
  env)
    printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
    printf 'export NATS_URL=%q\n' "$NATS_URL"
    ;;
  *) usage ;;
esac
