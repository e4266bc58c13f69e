#!/usr/bin/env bash
# Installs what examples/consumers/python needs (nats-py, examples/consumers/python/
# requirements.txt) into the project-local folder .local/pip-consumer, never into the user's
# Python, and prints that folder on stdout (for PYTHONPATH). Nothing is installed when it is
# already there. Used by tests/api/consumers.rs; run it by hand to try the example:
#   PYTHONPATH="$(scripts/python-consumer-deps.sh)" python3 examples/consumers/python/consumer.py --help
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

target="$RW_LOCAL/pip-consumer"
req="$RW_ROOT/examples/consumers/python/requirements.txt"
command -v python3 >/dev/null 2>&1 || apt_install python3
if ! PYTHONPATH="$target" python3 -c 'import nats.js' >/dev/null 2>&1; then
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  export PIP_ROOT_USER_ACTION=ignore   # quiet the "running pip as root" warning
  log "+ python3 -m pip install --quiet --target $target -r $req"
  mkdir -p "$target"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$target" -r "$req" >&2 || die "pip could not install $req"
  PYTHONPATH="$target" python3 -c 'import nats.js' || die "nats-py installed but not importable"
fi
printf '%s\n' "$target"
