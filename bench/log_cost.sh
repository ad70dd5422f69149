#!/usr/bin/env bash
# What each of the two logs costs, side by side: the same proxy writing every request to both
# logs (as shipped), with LOG_BODIES=false (a setting), and experiment builds that write to both
# with the log store's entries stripped of their bodies, to the JSON log only, to the log store
# only, or to neither.
#
#   bench/log_cost.sh [--rounds N] [-d SECONDS] [--body 1k|20k] [--shared DIR] [--out DIR]
#
# The experiment binary is the same code as the shipped one (HEAD and the working tree's
# uncommitted changes to tracked files) with bench/log_switches.patch applied (a switch read
# from BENCH_LOGS in the request log's thread), built in a temporary git worktree; it is never
# a product build. Each round runs the shared harness's load.sh (wrk, 64 connections) against
# each proxy in turn, the order rotating between rounds, through bench/cpu_split.py (the
# proxy's CPU time from /proc around it, by thread: the CPU_SPLIT lines in rounds.txt). Prints, per variant, the medians of requests/s and of CPU µs per request,
# the CPU range over the rounds, and the CPU beyond the build that writes no log; a failed
# request in any round (an HTTP error, a socket error, a timeout) fails the run instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/bench"
ROUNDS=6; DUR=5; BODY=1k
OUT="/tmp/uniproxy-log-cost-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    -d) DUR="$2"; shift 2 ;;
    --body) BODY="$2"; shift 2 ;;
    --shared) SHARED="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
  { echo "bench/log_cost.sh builds its experiment binary in a git worktree: run it in a git checkout" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
prepare
mkdir -p "$OUT"

TREE="$OUT/tree"
VARIANTS=(full no-bodies store-no-bodies json-only store-only none)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$SHARED/mock/mockctl.sh" stop 18080 >/dev/null 2>&1 || true
  git -C "$ROOT" worktree remove --force "$TREE" >/dev/null 2>&1 || true
  # The proxies' logs (gigabytes after a few rounds); the results stay.
  for v in "${VARIANTS[@]}"; do rm -rf "${OUT:?}/$v"; done
}
trap cleanup EXIT

echo "== building the experiment binary (the same code + bench/log_switches.patch)"
git -C "$ROOT" worktree add --detach --force "$TREE" HEAD >/dev/null
git -C "$ROOT" diff HEAD --binary -- . ':(exclude)bench' >"$OUT/uncommitted.diff"
if [ -s "$OUT/uncommitted.diff" ]; then
  git -C "$TREE" apply "$OUT/uncommitted.diff"
fi
if [ -n "$(git -C "$ROOT" ls-files --others --exclude-standard -- crates bins)" ]; then
  echo "warning: untracked files under crates/ or bins/ are not in the experiment binary" >&2
fi
git -C "$TREE" apply "$ROOT/bench/log_switches.patch" ||
  { echo "bench/log_switches.patch no longer applies to this code: update it" >&2; exit 1; }
(cd "$TREE" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/log-switches" \
  cargo build --release --locked -q -p uniproxy)
SWITCHED="${CARGO_TARGET_DIR:-$ROOT/target}/log-switches/release/uniproxy"

"$SHARED/mock/mockctl.sh" start 18080 >/dev/null
UPSTREAM=(TYPE=openai BASE_URL=http://127.0.0.1:18080/v1 ACTUAL_NAME=gpt-4o-mini)
declare -A PORT PID
port=4030
for v in "${VARIANTS[@]}"; do
  case "$v" in
    full) start_proxy "$v" "$port" "${UPSTREAM[@]}" ;;
    no-bodies) start_proxy "$v" "$port" "${UPSTREAM[@]}" LOG_BODIES=false ;;
    *) BIN_SAVED=$BIN; BIN=$SWITCHED
       start_proxy "$v" "$port" "${UPSTREAM[@]}" BENCH_LOGS="$v"
       BIN=$BIN_SAVED ;;
  esac
  PORT[$v]=$port; PID[$v]=$PROXY_PID; port=$((port + 1))
done

echo "== $ROUNDS rounds of $DUR s per variant, $BODY bodies, 64 connections"
ROWS="$OUT/rounds.txt"; : >"$ROWS"
n=${#VARIANTS[@]}
for round in $(seq "$ROUNDS"); do
  for j in $(seq 0 $((n - 1))); do
    v=${VARIANTS[$(((round + j) % n))]}
    # One load run, its CPU read by thread; a failed request fails it (and the script).
    python3 "$ROOT/bench/cpu_split.py" --load "$SHARED/load.sh" --url "http://127.0.0.1:${PORT[$v]}/v1" \
      --pid "${PID[$v]}" -d "$DUR" --label "$v" -- --body "$BODY" | grep '^CPU_SPLIT' | tee -a "$ROWS"
  done
done

python3 - "$ROWS" "${VARIANTS[@]}" <<'PY'
import statistics as st, sys
rows, variants = sys.argv[1], sys.argv[2:]
by = {v: [] for v in variants}
for line in open(rows):
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    by[f["label"]].append((float(f["rps"]), float(f["total_us"])))
base = st.median(c for _, c in by["none"])
print(f"{'variant':<15} {'req/s':>8} {'CPU µs/req':>10} {'range':>13} {'beyond none':>11}")
for v in variants:
    rps = st.median(r for r, _ in by[v]); cpu = [c for _, c in by[v]]
    print(f"{v:<15} {rps:>8.0f} {st.median(cpu):>10.1f} {min(cpu):>6.1f}-{max(cpu):<6.1f} {st.median(cpu) - base:>+11.1f}")
    print(f"LOG_COST variant={v} rps={rps:.0f} cpu_us={st.median(cpu):.2f} min={min(cpu):.2f} max={max(cpu):.2f}")
PY
