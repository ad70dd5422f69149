#!/usr/bin/env python3
"""Where a proxy's CPU goes under load: user and kernel time per request, by thread.

  cpu_split.py --load SHARED/load.sh --url http://127.0.0.1:4000/v1 --pid PID [--pid PID...]
               [-d SECONDS] [--label NAME] [--whole] [--json FILE] [-- LOAD.SH OPTIONS...]

Reads every thread's user and system time (/proc/PID/task/*/stat) before and after one run of
the shared harness's load.sh (wrk, 64 connections) against --url, and prints them per request,
grouped by what the threads do:

  runtime        the main thread and `uniproxy-N`: the server's event loops
  store writer   `logstore-writer`: the SQLite log store's batched transactions
  request log    `request-log`: the JSON log's lines and the store's entries
  blocking pool  `tokio-rt-worker`: records waiting for room in a full queue, store reads
  other          the rest, and threads that ended during the run (their time stays in the
                 process's total, which is read too)

--whole reports each --pid as one group named by --label (nginx's worker processes).
compare.sh's "CPU per request" is the sum of these; the split says how much of it is the
kernel's (sockets, file writes) and which thread spends it. Prints a table, then one line
`CPU_SPLIT label=.. requests=N rps=.. total_us=.. <group>=<user>/<sys> ...` (µs per request).
Linux only; standard library only.
"""
import argparse
import json
import os
import re
import subprocess
import sys

TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")
GROUPS = ["runtime", "store writer", "request log", "blocking pool", "other"]
# load.sh's counts of requests that got no good answer (an HTTP error, a socket error, a
# timeout): CPU per request means nothing once any is there.
FAILURES = ("non2xx", "sock_connect", "sock_read", "sock_write", "timeouts")


def times(stat_path):
    """(user, system) clock ticks of a /proc stat file; fields 14 and 15, after the name."""
    with open(stat_path) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]), int(rest[12])


def comm(task_dir):
    with open(os.path.join(task_dir, "comm")) as f:
        return f.read().strip()


def group(pid, tid, name):
    if tid == pid or re.fullmatch(r"uniproxy-\d+", name):
        return "runtime"
    return {
        "logstore-writer": "store writer",
        "request-log": "request log",
        "tokio-rt-worker": "blocking pool",
    }.get(name, "other")


def snapshot(pids):
    """{pid: (process total, {tid: (name, user, system)})}"""
    out = {}
    for pid in pids:
        tasks = {}
        base = f"/proc/{pid}/task"
        for tid in os.listdir(base):
            try:
                tasks[int(tid)] = (comm(f"{base}/{tid}"), *times(f"{base}/{tid}/stat"))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue  # ended while being read
        out[pid] = (times(f"/proc/{pid}/stat"), tasks)
    return out


def split(before, after, whole, label):
    """{group: [user ticks, system ticks]}"""
    sums = {}
    for pid, ((pu1, ps1), tasks1) in after.items():
        (pu0, ps0), tasks0 = before[pid]
        if whole:
            acc = sums.setdefault(label, [0, 0])
            acc[0] += pu1 - pu0
            acc[1] += ps1 - ps0
            continue
        seen_u = seen_s = 0
        for tid, (name, u1, s1) in tasks1.items():
            _, u0, s0 = tasks0.get(tid, (name, 0, 0))
            acc = sums.setdefault(group(pid, tid, name), [0, 0])
            acc[0] += u1 - u0
            acc[1] += s1 - s0
            seen_u += u1 - u0
            seen_s += s1 - s0
        # Threads that ended during the run: in the process's total, in no task.
        acc = sums.setdefault("other", [0, 0])
        acc[0] += max(0, (pu1 - pu0) - seen_u)
        acc[1] += max(0, (ps1 - ps0) - seen_s)
    return sums


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load", required=True, help="the shared harness's load.sh")
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("-d", type=int, default=10, help="seconds of load")
    ap.add_argument("--label", default="proxy")
    ap.add_argument("--whole", action="store_true", help="one group per run: the processes whole")
    ap.add_argument("--json", help="write the numbers here too")
    ap.add_argument("rest", nargs="*", help="more load.sh options, after --")
    a = ap.parse_args()

    before = snapshot(a.pid)
    run = subprocess.run([a.load, a.url, "-d", str(a.d), "--label", a.label, *a.rest],
                         capture_output=True, text=True, check=False)
    after = snapshot(a.pid)
    line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT")), None)
    if run.returncode != 0 or line is None:
        sys.stderr.write(run.stdout + run.stderr)
        sys.exit("cpu_split.py: the load run failed")
    fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    requests = int(fields["requests"])
    if requests == 0:
        sys.exit("cpu_split.py: no requests were answered")
    failed = {k: fields.get(k, "0") for k in FAILURES if fields.get(k, "0") != "0"}
    if failed:
        sys.exit(f"cpu_split.py: {a.label}: failed requests, {failed}: {line}")

    sums = split(before, after, a.whole, a.label)
    order = [a.label] if a.whole else [g for g in GROUPS if g in sums]
    per = {g: (sums[g][0] * TICK_US / requests, sums[g][1] * TICK_US / requests) for g in order}
    total_u = sum(u for u, _ in per.values())
    total_s = sum(s for _, s in per.values())

    print(f"# {a.label}: {requests} requests, {fields.get('rps')} req/s; µs per request")
    print(f"{'':<14} {'user':>7} {'system':>7} {'both':>7}")
    for g in order:
        u, s = per[g]
        print(f"{g:<14} {u:>7.1f} {s:>7.1f} {u + s:>7.1f}")
    print(f"{'total':<14} {total_u:>7.1f} {total_s:>7.1f} {total_u + total_s:>7.1f}")
    parts = " ".join(f"{g.replace(' ', '_')}={u:.1f}/{s:.1f}" for g, (u, s) in per.items())
    print(f"CPU_SPLIT label={a.label} requests={requests} rps={fields.get('rps')} "
          f"total_us={total_u + total_s:.1f} user_us={total_u:.1f} sys_us={total_s:.1f} {parts}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"label": a.label, "requests": requests, "rps": fields.get("rps"),
                       "us_per_request": {g: {"user": u, "system": s} for g, (u, s) in per.items()}},
                      f, indent=1)


if __name__ == "__main__":
    main()
