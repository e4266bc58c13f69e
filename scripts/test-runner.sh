#!/usr/bin/env bash
# Cargo's target runner for `make test` (CARGO_TARGET_<TRIPLE>_RUNNER): runs one test binary
# with a deadline, so a hung test fails the run in minutes instead of eating CI's whole limit.
#
#   scripts/test-runner.sh BINARY [ARGS...]
#
# RUNWATCH_TEST_TIMEOUT (seconds, default 1500) bounds one test binary (the integration tests
# are one binary, tests/api: the bound covers them all). When it passes, this
# prints what the binary's processes and the database were doing (pg_stat_activity, lock
# waits), kills the binary's whole process group (it runs in a session of its own, so the
# nats-server/postgres/runwatch children that tests start go too) and exits 124.
set -uo pipefail

limit="${RUNWATCH_TEST_TIMEOUT:-1500}"
[ $# -ge 1 ] || { echo "usage: $0 BINARY [ARGS...]" >&2; exit 2; }

diagnose() {
  echo "=== test-runner: $(basename "$1") still running after ${limit}s: diagnostics ===" >&2
  ps -o pid,ppid,etime,stat,args --forest -s "$child" >&2 2>/dev/null || true
  local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/runwatch}" psql
  psql="$(command -v psql || true)"
  [ -n "$psql" ] || [ -z "${PG_BIN_DIR:-}" ] || psql="$PG_BIN_DIR/psql"
  if [ -n "$psql" ] && [ -x "$psql" ]; then
    # the 'postgres' database of the configured server
    local admin="${url%%\?*}"; admin="${admin%/*}/postgres"
    PGCONNECT_TIMEOUT=5 timeout 20 "$psql" -X -w -d "$admin" -P pager=off </dev/null >&2 2>&1 \
      -c "select pid, usename, datname, application_name, state, wait_event_type, wait_event,
                 now() - xact_start as xact_age, pg_blocking_pids(pid) as blocked_by,
                 left(regexp_replace(query, '\s+', ' ', 'g'), 160) as query
            from pg_stat_activity
           where backend_type = 'client backend' and pid <> pg_backend_pid()
           order by xact_start nulls last" \
      -c "select locktype, database, relation::regclass, pid, mode, granted
            from pg_locks where not granted" || true
  fi
  echo "=== end of diagnostics ===" >&2
}

timed_out() {
  diagnose "$1"
  kill -TERM -- "-$child" 2>/dev/null
  sleep 5
  kill -KILL -- "-$child" 2>/dev/null
  echo "test-runner: killed $(basename "$1") after ${limit}s (RUNWATCH_TEST_TIMEOUT)" >&2
  exit 124
}

# The binary leads a session and process group of its own (setsid), whose id is its pid.
setsid "$@" &
child=$!
trap 'timed_out "$1"' USR1
# shellcheck disable=SC2016  # expanded by the inner bash
setsid bash -c 'sleep "$0" && kill -USR1 "$1"' "$limit" $$ 2>/dev/null &
watchdog=$!
wait "$child"
rc=$?
kill -- "-$watchdog" 2>/dev/null
exit "$rc"
