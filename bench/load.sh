#!/usr/bin/env bash
# The whole performance suite in one go, loopback only, driving the shared harness
# (../shared/bench: an nginx + Lua mock upstream, wrk, compare.sh, overhead.py, startup.py).
#
#   bench/load.sh [--rounds N] [-d SECONDS] [--quick] [--shared DIR] [--out DIR] [--keep-logs]
#
# Runs, interleaved with direct-to-mock rounds in each compare.sh run:
#   - nginx proxy_pass (the pass-through ceiling) and uniproxy with TYPE=openai,
#     for 1 KB and 20 KB requests, each non-stream and as a 100-event stream;
#   - uniproxy with TYPE=anthropic (OpenAI in, Anthropic Messages upstream), the same four;
#   - added latency at low load (overhead.py, one request in flight) for both proxies: right
#     after the 1 KB load, and again once the log store and the page cache have caught up;
#   - start-up to first answer (startup.py; startup_ms.py to the millisecond, on a new
#     database and on the 1 KB proxy's full one), idle RSS, RSS with 1,000 open streams;
#   - log entries written against requests sent (an exact-count client, then SIGTERM);
#   - where the CPU goes at 1 KB and 20 KB: user and kernel time per request, by thread
#     (cpu_split.py).
# Every uniproxy request is logged in full (SQLite store and JSON log, bodies included).
# Prints the tables and ratios, then each of issue 7's targets with its verdict
# (bench/targets.py); raw results stay in --out (default /tmp/uniproxy-bench-DATE).
# The proxies' databases and JSON logs (23 GB for `--rounds 2 -d 6`) are removed at the end
# unless --keep-logs; the run refuses to start without that much free where --out is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/bench"
ROUNDS=3; DUR=10; QUICK=""; KEEP_LOGS=""
OUT="/tmp/uniproxy-bench-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    -d) DUR="$2"; shift 2 ;;
    --quick) QUICK=1; ROUNDS=1; DUR=4; shift ;;
    --shared) SHARED="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --keep-logs) KEEP_LOGS=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
prepare
mkdir -p "$OUT"
# A proxy writing to a full disk measures the disk, and a full disk stops everything else on
# the machine. The proxies' stores and JSON logs took 23 GB over `--rounds 2 -d 6` (run 20):
# about 1.9 GB per second of rounds, every case together.
NEED_GB=$(( ROUNDS * DUR * 2 + 2 ))
FREE_GB=$(df --output=avail -BG "$OUT" | tail -1 | tr -dc 0-9)
if [ "$FREE_GB" -lt "$NEED_GB" ]; then
  echo "load.sh: $OUT has ${FREE_GB} GB free; this run logs up to ~${NEED_GB} GB (free some, or --quick, fewer --rounds or a shorter -d)" >&2
  exit 2
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$SHARED/mock/refproxy.sh" stop 18090 >/dev/null 2>&1 || true
  "$SHARED/mock/mockctl.sh" stop 18080 >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$SHARED/mock/mockctl.sh" start 18080 >/dev/null
"$SHARED/mock/refproxy.sh" start 18090 >/dev/null
NGINX_PID=$(cat /tmp/bench-refproxy-18090/nginx.pid)

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

start_proxy openai 4000 TYPE=openai BASE_URL=http://127.0.0.1:18080/v1 ACTUAL_NAME=gpt-4o-mini
OPENAI_PID=$PROXY_PID
start_proxy anthropic 4001 TYPE=anthropic BASE_URL=http://127.0.0.1:18080/v1 ACTUAL_NAME=claude-sonnet-4-5
ANTHROPIC_PID=$PROXY_PID
sleep 1
IDLE_RSS=$(rss "$OPENAI_PID")
echo "rss_idle_mb=$IDLE_RSS" > "$OUT/idle_rss.txt"

OVER=2000; [ -n "$QUICK" ] && OVER=300
compare nginx-1k http://127.0.0.1:18090/v1 "$NGINX_PID" --overhead "$OVER"
compare uniproxy-1k http://127.0.0.1:4000/v1 "$OPENAI_PID" --overhead "$OVER"

# The readings above come seconds after 24 s of full load: the proxy's writer may still be
# draining its queue and the kernel writing back a gigabyte of log, neither of which is "low
# load". Read again once both are done (the database keeps its size).
echo "== added latency at low load, settled: the log store's queue empty, the page cache written back"
for _ in $(seq 600); do
  curl -sf http://127.0.0.1:4000/health | python3 -c \
    "import json,sys; sys.exit(json.load(sys.stdin)['log_store']['queued'] != 0)" 2>/dev/null && break
  sleep 0.1
done
sync; sleep 1
for target in nginx-1k=http://127.0.0.1:18090/v1 uniproxy-1k=http://127.0.0.1:4000/v1; do
  mkdir -p "$OUT/settled/${target%%=*}-settled"
  python3 "$SHARED/overhead.py" --proxy "${target#*=}" -n "$OVER" --label "${target%%=*}-settled" \
    --json "$OUT/settled/${target%%=*}-settled/overhead.json" | tail -1
done

# compare.sh reads each proxy's CPU as one number; split it by thread, user and kernel time.
echo "== where the CPU goes: µs per request by thread, user / kernel, 64 connections"
mkdir -p "$OUT/split"
NGINX_WORKERS=()
for w in $(pgrep -P "$NGINX_PID"); do NGINX_WORKERS+=(--pid "$w"); done
cpu_split() { # label pid-options... -- load.sh options
  local label=$1; shift
  python3 "$ROOT/bench/cpu_split.py" --load "$SHARED/load.sh" -d "$DUR" --label "$label" \
    --json "$OUT/split/$label.json" "$@" | tee "$OUT/split/$label.txt" | grep -v '^CPU_SPLIT' \
    || echo "the CPU split of $label failed"
}
for body in 1k 20k; do
  cpu_split "nginx-$body" --url http://127.0.0.1:18090/v1 "${NGINX_WORKERS[@]}" --whole -- --body "$body"
  cpu_split "uniproxy-$body" --url http://127.0.0.1:4000/v1 --pid "$OPENAI_PID" -- --body "$body"
done

compare nginx-20k http://127.0.0.1:18090/v1 "$NGINX_PID" --body 20k
compare uniproxy-20k http://127.0.0.1:4000/v1 "$OPENAI_PID" --body 20k
compare nginx-stream http://127.0.0.1:18090/v1 "$NGINX_PID" --stream --timeout 60
compare uniproxy-stream http://127.0.0.1:4000/v1 "$OPENAI_PID" --stream --timeout 60
compare nginx-20k-stream http://127.0.0.1:18090/v1 "$NGINX_PID" --body 20k --stream --timeout 60
compare uniproxy-20k-stream http://127.0.0.1:4000/v1 "$OPENAI_PID" --body 20k --stream --timeout 60
# The direct leg stays OpenAI-to-mock: the ratio is what translating to Anthropic costs on top.
compare uniproxy-anthropic-1k http://127.0.0.1:4001/v1 "$ANTHROPIC_PID"
compare uniproxy-anthropic-stream http://127.0.0.1:4001/v1 "$ANTHROPIC_PID" --stream --timeout 60
compare uniproxy-anthropic-20k http://127.0.0.1:4001/v1 "$ANTHROPIC_PID" --body 20k
compare uniproxy-anthropic-20k-stream http://127.0.0.1:4001/v1 "$ANTHROPIC_PID" --body 20k --stream --timeout 60

echo "== start-up to first answer"
python3 "$SHARED/startup.py" --url http://127.0.0.1:4003/v1 --runs 5 -- env -i PATH="$PATH" \
  HOST=127.0.0.1 PORT=4003 TYPE=openai BASE_URL=http://127.0.0.1:18080/v1 API_KEY=k ACTUAL_NAME=m \
  DATABASE_URL="sqlite:///$OUT/startup.db" LOG_FILE_PATH="$OUT/startup.log" "$BIN" | tail -1 | tee "$OUT/startup.txt"

# startup.py polls every 50 ms: "0.05 s" says only "between the first try and the second".
echo "== start-up to first answer, to the millisecond: a new database, then the 1 KB proxy's"
START=(env -i PATH="$PATH" HOST=127.0.0.1 PORT=4003 TYPE=openai BASE_URL=http://127.0.0.1:18080/v1
  API_KEY=k ACTUAL_NAME=m LOG_FILE_PATH="$OUT/startup.log")
python3 "$ROOT/bench/startup_ms.py" --url http://127.0.0.1:4003/v1 --runs 5 \
  --remove "$OUT/startup.db" "$OUT/startup.db-wal" "$OUT/startup.db-shm" -- \
  "${START[@]}" DATABASE_URL="sqlite:///$OUT/startup.db" "$BIN" | tail -1 \
  | sed 's/^/new database: /' | tee "$OUT/startup_ms.txt"
# The same proxy, idle since its last load (the Anthropic and start-up runs went to others):
# what it keeps of the memory its loads took.
AFTER_RSS=$(rss "$OPENAI_PID")
echo "rss_after_loads_mb=$AFTER_RSS" >> "$OUT/idle_rss.txt"
# A restart over a log that holds every request of the runs above.
kill -TERM "$OPENAI_PID"; while kill -0 "$OPENAI_PID" 2>/dev/null; do sleep 0.1; done
ENTRIES=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from requests').fetchone()[0])" "$OUT/openai/proxy.db")
python3 "$ROOT/bench/startup_ms.py" --url http://127.0.0.1:4003/v1 --runs 5 -- \
  "${START[@]}" DATABASE_URL="sqlite:///$OUT/openai/proxy.db" "$BIN" | tail -1 \
  | sed "s/^/database of $ENTRIES entries, $(du -h "$OUT/openai/proxy.db" | cut -f1): /" | tee -a "$OUT/startup_ms.txt"

echo "== RSS with 1,000 open streams"
start_proxy streams 4002 TYPE=openai BASE_URL=http://127.0.0.1:18080/sse/delay/50/v1 ACTUAL_NAME=m
python3 "$ROOT/bench/open_streams.py" --url http://127.0.0.1:4002/v1 --pid "$PROXY_PID" -n 1000 --hold 3 | tee "$OUT/streams.txt"

echo "== log entries written against requests sent"
start_proxy counted 4004 TYPE=openai BASE_URL=http://127.0.0.1:18080/v1 ACTUAL_NAME=m
N=20000; [ -n "$QUICK" ] && N=5000
python3 "$ROOT/bench/counted.py" --url http://127.0.0.1:4004/v1 -n "$N" -c 32 | tee "$OUT/counted.txt"
kill -TERM "$PROXY_PID"; while kill -0 "$PROXY_PID" 2>/dev/null; do sleep 0.1; done
ROWS=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from requests').fetchone()[0])" "$OUT/counted/proxy.db")
SENT=$(grep -o 'sent=[0-9]*' "$OUT/counted.txt" | cut -d= -f2)
echo "ENTRIES sent=$SENT logged=$ROWS $([ "$SENT" = "$ROWS" ] && echo equal || echo MISMATCH)" | tee "$OUT/entries.txt"

echo
echo "== summary (medians; CPU per request is the proxy's own; ratios against direct-to-mock)"
printf '%-28s %10s %9s %9s %11s %9s %9s\n' case rps p50_ms p99_ms cpu_us/req rps_ratio rss_mb
for f in "$OUT"/compare/*/summary.json; do
  python3 - "$f" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))["summary"]
name = os.path.basename(os.path.dirname(sys.argv[1]))
g = lambda k: (s.get(k) if s.get(k) is not None else float("nan"))
print(f"{name:<28} {g('proxy_rps'):>10.0f} {g('proxy_p50_ms'):>9.3f} {g('proxy_p99_ms'):>9.3f} "
      f"{g('proxy_cpu_us_per_req'):>11.1f} {g('rps_ratio'):>9.3f} {g('proxy_peak_rss_mb'):>9.1f}")
PY
done
for f in "$OUT"/compare/*/overhead.json "$OUT"/settled/*/overhead.json; do
  [ -f "$f" ] || continue
  python3 -c "import json,sys,os; o=json.load(open(sys.argv[1])); print(f\"added latency {os.path.basename(os.path.dirname(sys.argv[1]))}: p50 {o['overhead_p50_ms']:.3f} ms, p99 {o['overhead_p99_ms']:.3f} ms, paired median {o['overhead_paired_median_ms']:.3f} ms\")" "$f"
done
grep -h '^CPU_SPLIT' "$OUT"/split/*.txt || true
echo "idle RSS ${IDLE_RSS} MiB (${AFTER_RSS} MiB idle after the loads); $(cat "$OUT/streams.txt")"
cat "$OUT/startup.txt" "$OUT/startup_ms.txt" "$OUT/entries.txt"
echo
python3 "$ROOT/bench/targets.py" "$OUT" | tee "$OUT/targets.txt"
echo "raw results: $OUT"
if [ -z "$KEEP_LOGS" ]; then
  # Every request was logged in full: gigabytes of databases and JSON logs nobody reads.
  freed=$(du -sch "$OUT"/*/proxy.db* "$OUT"/*/proxy.log* "$OUT"/startup.db* "$OUT"/startup.log* 2>/dev/null | tail -1 | cut -f1)
  rm -f "$OUT"/*/proxy.db* "$OUT"/*/proxy.log* "$OUT"/startup.db* "$OUT"/startup.log*
  echo "removed the proxies' databases and JSON logs ($freed; --keep-logs keeps them)"
fi
