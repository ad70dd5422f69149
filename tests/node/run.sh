#!/usr/bin/env bash
# The official openai Node SDK (openai-node) against the built binary. Ends with the line
# `openai-node: N passed, N failed`.
#
#   UNIPROXY_BIN  the binary (default: target/debug/uniproxy; build it first)
#
# Installs the test's one npm package (openai, pinned in package-lock.json) with `npm ci`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export UNIPROXY_BIN="${UNIPROXY_BIN:-$root/target/debug/uniproxy}"

if [ ! -x "$UNIPROXY_BIN" ]; then
  echo "openai-node: no binary at $UNIPROXY_BIN (run cargo build -p uniproxy first)"
  echo "openai-node: 0 passed, 1 failed"
  exit 1
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
exec node "$here/test.mjs"
