#!/usr/bin/env bash
# Soak test of the release binary: loopback only, bounded in time. Not run by CI.
#
#   bench/soak.sh                 # 60 s, 300 clients, SIGTERM under load at the end
#   bench/soak.sh --seconds 20    # shorter
#   bench/soak.sh --kill9         # SIGKILL half-way, restart, PRAGMA integrity_check
#   bench/soak.sh --platform anthropic   # or google: the upstream in that format
#
# Every other flag goes to bench/soak.py (see `python3 bench/soak.py --help`).
# Builds with cargo first; CARGO_TARGET_DIR is honoured. Needs python3 (standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p uniproxy
# A few hundred clients, and as many upstream connections, in one process each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 4096 2>/dev/null || true
exec python3 bench/soak.py --binary "$target/release/uniproxy" "$@"
