#!/usr/bin/env bash
# What an HTTPS upstream costs, which bench/load.sh does not measure: nginx terminates TLS in
# front of the shared mock, offering HTTP/2 and HTTP/1.1 on one port and HTTP/1.1 only on
# another, and uniproxy (TYPE=openai, every request logged in full) is measured against each
# and against the mock over plain HTTP, for 1 KB chats and 100-event streams, with compare.sh.
#
#   bench/https.sh [--rounds N] [-d SECONDS] [--shared DIR] [--out DIR]
#
# The certificate is made here by a throwaway CA, and the proxies trust it through
# SSL_CERT_FILE (rustls-native-certs reads it); nothing is installed in the system's store.
# The CPU per request is uniproxy's own; nginx's TLS work is not in it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/bench"
ROUNDS=2; DUR=6
OUT="/tmp/uniproxy-https-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    -d) DUR="$2"; shift 2 ;;
    --shared) SHARED="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
prepare
mkdir -p "$OUT/tls/logs"

echo "== a CA and a certificate for localhost"
TLS="$OUT/tls"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -out "$TLS/ca.pem" -days 2 \
  -subj "/CN=uniproxy bench CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$TLS/key.pem" -out "$TLS/leaf.csr" \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TLS/ext.cnf"
openssl x509 -req -in "$TLS/leaf.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
  -out "$TLS/cert.pem" -days 2 -extfile "$TLS/ext.cnf" 2>/dev/null

cat >"$TLS/nginx.conf" <<CONF
worker_processes 1;
pid $TLS/nginx.pid;
error_log $TLS/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream mock { server 127.0.0.1:18080; keepalive 256; }
    ssl_certificate $TLS/cert.pem;
    ssl_certificate_key $TLS/key.pem;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:18443 ssl http2;
        location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    }
    server {
        listen 127.0.0.1:18444 ssl;
        location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    }
}
CONF

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  nginx -p "$TLS" -c "$TLS/nginx.conf" -s stop 2>/dev/null || true
  "$SHARED/mock/mockctl.sh" stop 18080 >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$SHARED/mock/mockctl.sh" start 18080 >/dev/null
nginx -p "$TLS" -c "$TLS/nginx.conf"

cases=(plain=http://127.0.0.1:18080/v1 https-h2=https://localhost:18443/v1 https-h1=https://localhost:18444/v1)
port=4100
for c in "${cases[@]}"; do
  name=${c%%=*}
  start_proxy "$name" "$port" TYPE=openai BASE_URL="${c#*=}" ACTUAL_NAME=gpt-4o-mini SSL_CERT_FILE="$TLS/ca.pem"
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'content-type: application/json' -d @"$SHARED/requests/chat_1k.json")
  [ "$code" = 200 ] || { echo "uniproxy ($name) answered $code" >&2; tail -3 "$OUT/$name/stderr.log" >&2; exit 1; }
  eval "PID_${name//-/_}=$PROXY_PID PORT_${name//-/_}=$port"
  port=$((port + 1))
done

for c in "${cases[@]}"; do
  name=${c%%=*}; var=${name//-/_}; pid_var="PID_$var"; port_var="PORT_$var"
  compare "$name-1k" "http://127.0.0.1:${!port_var}/v1" "${!pid_var}"
  compare "$name-stream" "http://127.0.0.1:${!port_var}/v1" "${!pid_var}" --stream --timeout 60
done

echo
echo "== summary (medians; CPU per request is uniproxy's own)"
printf '%-22s %10s %12s\n' case rps cpu_us/req
for f in "$OUT"/compare/*/summary.json; do
  python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["per_target"]["proxy"]
print(f'{d.get("label", sys.argv[1].split("/")[-2]):<22} {p["rps"]:>10.0f} {p["proxy_cpu_us_per_req"]:>12.1f}')
PY
done
echo "raw results: $OUT"
