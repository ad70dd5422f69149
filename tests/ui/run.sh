#!/usr/bin/env bash
# Drives the log viewer (/ui) in headless Chromium against the built binary, after real
# traffic on the mock platform. Ends with the line `ui: N passed, N failed`.
#
#   UNIPROXY_BIN  the binary (default: target/debug/uniproxy; build it first)
#   CHROMIUM      the browser (default: /usr/bin/chromium, Debian's package)
#
# Installs chromium and chromium-driver with apt-get when missing (CI runs as root), and the
# test's one npm package (playwright-core, which never downloads a browser) with `npm ci`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${UNIPROXY_BIN:-$root/target/debug/uniproxy}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
fi
if [ ! -x "$bin" ]; then
  echo "ui: no binary at $bin (run cargo build -p uniproxy first)"
  echo "ui: 0 passed, 1 failed"
  exit 1
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
export UI_BASE="http://127.0.0.1:$port"
export UI_KEY="ui-test-key-$$"
# Started from an empty folder, so a developer's .env is not read.
(cd "$work" && exec env TYPE=mock HOST=127.0.0.1 PORT="$port" \
  DATABASE_URL="$work/log.db" LOG_FILE_PATH="$work/proxy.log" \
  PROXY_API_KEYS="$UI_KEY" UI_ENABLED=true "$bin" >"$work/stderr.log" 2>&1) &
pid=$!

status=0
node "$here/traffic.mjs" && node "$here/test.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server output (last 20 lines)"
  tail -n 20 "$work/stderr.log" || true
fi
exit "$status"
