#!/usr/bin/env python3
"""Sends exactly N chat requests through the proxy (C keep-alive clients) and counts answers.

  counted.py --url http://127.0.0.1:4000/v1 [-n 20000] [-c 32] [--stream-every 4]

Prints `COUNTED sent=.. answered=.. ok=.. errors=..`. With a log database to compare against,
the number of entries must equal `sent`. Loopback only; standard library only.
"""
import argparse
import http.client
import json
import threading
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=32)
    ap.add_argument("--stream-every", type=int, default=4)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback URLs only")
    path = u.path.rstrip("/") + "/chat/completions"
    lock = threading.Lock()
    counts = {"sent": 0, "answered": 0, "ok": 0, "errors": 0}
    next_i = [0]

    def take():
        with lock:
            if next_i[0] >= a.n:
                return None
            next_i[0] += 1
            return next_i[0]

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        while (i := take()) is not None:
            stream = a.stream_every > 0 and i % a.stream_every == 0
            body = json.dumps({"model": "m", "stream": stream,
                               "messages": [{"role": "user", "content": f"request {i}"}]})
            with lock:
                counts["sent"] += 1
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            with lock:
                counts["answered"] += 1
                counts["ok" if r.status == 200 else "errors"] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(a.c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("COUNTED " + " ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
