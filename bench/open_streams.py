#!/usr/bin/env python3
"""Holds N streaming requests open through the proxy and reports its memory meanwhile.

  open_streams.py --url http://127.0.0.1:4002/v1 --pid PID [-n 1000] [--hold 5]

Each client sends a streaming chat request over its own connection and reads the answer
slowly; the upstream must be slow too (the mock's /sse/delay/MS/ prefix), so all N streams are
open at once. Once every stream has sent its first bytes, the proxy's VmRSS is sampled for
--hold seconds. Prints `OPEN_STREAMS n=.. opened=.. rss_idle_mb=.. rss_open_mb=.. completed=..`.
Loopback only; standard library only.
"""
import argparse
import json
import socket
import threading
import time
import urllib.parse


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=5.0)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback URLs only")
    body = json.dumps({"model": "m", "stream": True,
                       "messages": [{"role": "user", "content": "stream slowly"}]}).encode()
    head = (f"POST {u.path.rstrip('/')}/chat/completions HTTP/1.1\r\nHost: {u.hostname}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    idle = rss_mb(a.pid)
    opened = threading.Semaphore(0)
    completed = []

    def client():
        s = socket.create_connection((u.hostname, u.port), timeout=120)
        s.sendall(head + body)
        first = s.recv(4096)
        opened.release()
        data = first
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"[DONE]" in data[-64:]:
                break
        s.close()
        completed.append(b"[DONE]" in data)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(a.n)]
    for t in threads:
        t.start()
    n_open = 0
    deadline = time.time() + 60
    while n_open < a.n and time.time() < deadline:
        if opened.acquire(timeout=1):
            n_open += 1
    peak = 0.0
    end = time.time() + a.hold
    while time.time() < end:
        peak = max(peak, rss_mb(a.pid))
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=120)
    print(f"OPEN_STREAMS n={a.n} opened={n_open} rss_idle_mb={idle:.1f} "
          f"rss_open_mb={peak:.1f} completed={sum(completed)}")


if __name__ == "__main__":
    main()
