#!/usr/bin/env bash
# Regenerates `.sqlx/`, the offline metadata of the compile-time checked SQL (`sqlx::query!`
# and friends in src/store and src/explain), from a freshly migrated throwaway database.
# Run it after changing a query or a migration, and commit `.sqlx/`.
#
#   scripts/sqlx-prepare.sh            rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check    fail when .sqlx/ is not what the code needs (make test)
#
# How: create a database on the server of DATABASE_URL (`make services`'s; without it,
# postgres://postgres@127.0.0.1:5432; SQLX_PREPARE_PG=postgres://user@host:port overrides
# both), apply migrations/*.sql in order with psql (as `runwatch
# migrate` would, one transaction each), recompile the runwatch crate with the macros
# online (SQLX_OFFLINE=false, DATABASE_URL) and SQLX_OFFLINE_DIR set, which makes
# sqlx-macros write one query-<hash>.json per query, then drop the database. No sqlx-cli.
# Every other build reads `.sqlx/` (.cargo/config.toml sets SQLX_OFFLINE=true).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# CARGO may carry a wrapper and options (e.g. "nice -n 19 cargo"): split on purpose.
CARGO=${CARGO:-cargo}
# The server: SQLX_PREPARE_PG, else DATABASE_URL without its database (query kept).
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${url%%\?*}
query=${url#"$base"}
if [[ $base =~ ^[a-z]+://[^/]+/ ]]; then base=${base%/*}; fi
server=${SQLX_PREPARE_PG:-$base}
if [ -n "${SQLX_PREPARE_PG:-}" ]; then query=""; fi
db="runwatch_sqlx_$$"

psql_bin=$(command -v psql || true)
if [ -z "$psql_bin" ]; then
  eval "$(scripts/find-binaries.sh pg)"
  psql_bin="$PG_BIN_DIR/psql"
fi
psql_on() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"; }

out=$(mktemp -d)
cleanup() {
  psql_on "$server/postgres$query" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT

psql_on "$server/postgres$query" -c "CREATE DATABASE $db" >/dev/null
for f in migrations/*.sql; do
  psql_on "$server/$db$query" --single-transaction -f "$f" >/dev/null
done

# Only the runwatch crate recompiles (its dependencies are untouched): the macros run again
# for every query, so `out` ends with exactly the queries the code has.
touch src/lib.rs
# shellcheck disable=SC2086
if ! SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$server/$db$query" \
  $CARGO check --quiet --all-targets --features fault-injection; then
  echo "error: the SQL macros do not compile against a database migrated from migrations/" >&2
  echo "       (the errors above name the query); fix the query or the migration, then run" >&2
  echo "       scripts/sqlx-prepare.sh and commit .sqlx/" >&2
  exit 1
fi

if $check; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    diff -r "$out" .sqlx || true
    echo "error: .sqlx/ (the offline metadata of the SQL macros) is not current for this code" >&2
    echo "       and migrations/: run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    exit 1
  fi
  echo ".sqlx/ is current ($(find .sqlx -name 'query-*.json' | wc -l) queries)"
else
  rm -rf .sqlx
  mkdir .sqlx
  cp "$out"/query-*.json .sqlx/ 2>/dev/null || true
  echo "wrote .sqlx/ ($(find .sqlx -name 'query-*.json' | wc -l) queries)"
fi
