# Shared by bench/load.sh and bench/https.sh (sourced, not run). Expects ROOT (the
# repository), SHARED (the shared harness), OUT (the results folder), ROUNDS, DUR and the PIDS
# array (the proxies to stop at the end) to be set; `prepare` sets BIN.

need() { command -v "$1" >/dev/null 2>&1; }

# Installs what the shared harness runs on (Debian packages), if missing.
install_harness() {
  if ! need wrk || ! need nginx || ! need openssl || [ ! -e /usr/lib/nginx/modules/ndk_http_module.so ]; then
    echo "installing nginx-light, the Lua module, wrk and openssl (Debian packages)"
    apt-get update -qq && apt-get install -y -qq nginx-light libnginx-mod-http-lua wrk time openssl >/dev/null
  fi
}

# Checks that the shared harness is there, installs its packages, builds uniproxy in release
# mode (CARGO_TARGET_DIR is honoured) and sets BIN to it.
prepare() {
  [ -x "$SHARED/compare.sh" ] || { echo "the shared harness is not at $SHARED (use --shared DIR)" >&2; exit 2; }
  install_harness
  echo "== building uniproxy (release)"
  (cd "$ROOT" && cargo build --release --locked -q -p uniproxy)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/uniproxy"
}

# start_proxy NAME PORT ENV... : uniproxy in its own folder (database, log); sets PROXY_PID.
start_proxy() {
  local name=$1 port=$2; shift 2
  mkdir -p "$OUT/$name"
  # `exec`, so the pid is uniproxy's own and not a subshell's.
  (cd "$OUT/$name" && exec env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" API_KEY=sk-bench \
      DATABASE_URL="sqlite:///$OUT/$name/proxy.db" LOG_FILE_PATH="$OUT/$name/proxy.log" "$@" \
      "$BIN" >"$OUT/$name/stderr.log" 2>&1) &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  for _ in $(seq 100); do
    kill -0 "$PROXY_PID" 2>/dev/null || break  # exited: the port is taken, or bad settings
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 0.05
  done
  echo "uniproxy ($name) did not start" >&2; cat "$OUT/$name/stderr.log" >&2; exit 1
}

compare() { # label proxy-url pid extra-args...
  local label=$1 url=$2 pid=$3; shift 3
  echo "== $label"
  "$SHARED/compare.sh" --proxy "$url" --pid "$pid" --rounds "$ROUNDS" -d "$DUR" \
    --label "$label" --out "$OUT/compare/$label" "$@" | grep -E '^(target|direct |proxy |ratios|SUMMARY|OVERHEAD)' || true
}
