#!/usr/bin/env bash
# Installs the reference libraries that check runwatch's protocols (Standard Webhooks'
# `standardwebhooks`, the CloudEvents SDK `cloudevents`, nats-py, and OpenTelemetry's
# `opentelemetry-proto` for the OTLP receiver of tests/api/trace_context.rs; pinned in
# tests/protocols/requirements.txt) into the project-local folder .local/pip-protocols,
# never into the user's Python, and prints that folder on stdout (for PYTHONPATH). Nothing
# is installed when it is already there. Used by tests/api/protocols.rs and
# tests/api/trace_context.rs.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

target="$RW_LOCAL/pip-protocols"
req="$RW_ROOT/tests/protocols/requirements.txt"
probe='import standardwebhooks, nats.js
from cloudevents.core.bindings.http import from_http_event
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2'
mkdir -p "$RW_LOCAL"
# One install at a time (tests run in parallel).
exec 9>"$RW_LOCAL/pip-protocols.lock"
flock 9
command -v python3 >/dev/null 2>&1 || apt_install python3
if ! PYTHONPATH="$target" python3 -c "$probe" >/dev/null 2>&1; then
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  export PIP_ROOT_USER_ACTION=ignore   # quiet the "running pip as root" warning
  log "+ python3 -m pip install --quiet --target $target -r $req"
  mkdir -p "$target"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$target" -r "$req" >&2 || die "pip could not install $req"
  PYTHONPATH="$target" python3 -c "$probe" || die "$req installed but not importable"
fi
printf '%s\n' "$target"
