#!/usr/bin/env python3
"""Start-up to the first answer, to the millisecond.

  startup_ms.py --url http://127.0.0.1:4003/v1 [--runs 5] [--remove FILE...] -- COMMAND ARGS...

The shared startup.py tries once at launch and then every 50 ms, so a proxy that is ready in
5 ms and one ready in 50 ms both read 0.05 s. This one tries every millisecond: each run
launches COMMAND, posts the 1 KB chat request until an answer is 200 with a JSON body, and
stops the process (SIGTERM). --remove deletes the given files before each run (a fresh
database); without it the runs open what the command points at (an existing database).
Prints one line per run, then `STARTUP_MS runs=N median_ms=.. min_ms=.. max_ms=..`.
Loopback only; standard library only.
"""
import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse

BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ],
}


def answered(host, port, path, body):
    c = http.client.HTTPConnection(host, port, timeout=5)
    try:
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status == 200 and r.read()[:1] == b"{"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--remove", nargs="*", default=[])
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        sys.exit("give the command after --")
    u = urllib.parse.urlsplit(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback URLs only")
    path = u.path.rstrip("/") + "/chat/completions"
    body = json.dumps(BODY).encode()
    if answered(u.hostname, u.port, path, body):
        sys.exit("something already answers at %s; stop it first" % a.url)

    times = []
    for i in range(a.runs):
        for f in a.remove:
            try:
                os.remove(f)
            except FileNotFoundError:
                pass
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = False
        while time.monotonic() - t0 < a.timeout and p.poll() is None:
            if answered(u.hostname, u.port, path, body):
                ok = True
                break
            time.sleep(0.001)
        dt = (time.monotonic() - t0) * 1000
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if not ok:
            sys.exit("run %d: no answer after %.0f ms (exit code %s)" % (i + 1, dt, p.returncode))
        times.append(dt)
        print("run %d: answered in %.1f ms" % (i + 1, dt))
    print("STARTUP_MS runs=%d median_ms=%.1f min_ms=%.1f max_ms=%.1f" % (
        len(times), statistics.median(times), min(times), max(times)))


if __name__ == "__main__":
    main()
