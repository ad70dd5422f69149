#!/usr/bin/env python3
"""Reads a `bench/load.sh` run's raw results and prints each of issue 7's targets with its
verdict: throughput against nginx `proxy_pass` in the same run (every case both proxies ran),
CPU per 1 KB request and per 100-event stream, added latency at low load, RSS idle and with
1,000 open streams, start-up to first answer, log entries against requests sent.

    python3 bench/targets.py OUT_DIR      # load.sh calls it at the end of a run

A number the run did not produce reads "not measured" and counts as missed.
"""

import json
import re
import sys
from pathlib import Path

# The targets (issue 7), every uniproxy request logged in full.
THROUGHPUT_RATIO = 0.8
CPU_1K_US = 25.0
CPU_STREAM_US = 150.0
LATENCY_P50_MS = 0.1
LATENCY_P99_MS = 0.25
RSS_IDLE_MB = 20.0
RSS_STREAMS_MB = 100.0
STARTUP_MS = 50.0

# The cases both proxies ran: the throughput target compares these.
PAIRED = [("1k", "1 KB", "req/s"), ("20k", "20 KB", "req/s"),
          ("stream", "100-event stream", "streams/s"),
          ("20k-stream", "20 KB request, 100-event stream", "streams/s")]


def summary(out, case):
    try:
        return json.loads((out / "compare" / case / "summary.json").read_text())["summary"]
    except (OSError, ValueError, KeyError):
        return None


def number(text, key):
    """`key=NUMBER` in a harness line, or None."""
    m = re.search(rf"\b{re.escape(key)}=([0-9.]+)", text)
    return float(m.group(1)) if m else None


def read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def verdict(value, limit, at_most=True):
    if value is None:
        return "✗ not measured"
    ok = value <= limit if at_most else value >= limit
    return "✓" if ok else "✗"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: targets.py OUT_DIR")
    out = Path(sys.argv[1])
    rows = []  # (what, measured, target, verdict)

    for case, name, unit in PAIRED:
        up, ng = summary(out, f"uniproxy-{case}"), summary(out, f"nginx-{case}")
        if up is None or ng is None or not ng.get("proxy_rps"):
            rows.append((f"throughput, {name}", "not measured", f"≥ {THROUGHPUT_RATIO}× nginx",
                         verdict(None, 0)))
            continue
        ratio = up["proxy_rps"] / ng["proxy_rps"]
        rows.append((f"throughput, {name}",
                     f"{up['proxy_rps']:,.0f} vs {ng['proxy_rps']:,.0f} {unit} = {ratio:.3f}×",
                     f"≥ {THROUGHPUT_RATIO}× nginx", verdict(ratio, THROUGHPUT_RATIO, False)))

    for case, name, limit in [("uniproxy-1k", "CPU per 1 KB request", CPU_1K_US),
                              ("uniproxy-stream", "CPU per 100-event stream", CPU_STREAM_US),
                              ("uniproxy-anthropic-stream",
                               "CPU per 100-event stream, Anthropic upstream", CPU_STREAM_US)]:
        s = summary(out, case)
        cpu = s.get("proxy_cpu_us_per_req") if s else None
        shown = f"{cpu:.1f} µs" if cpu is not None else "not measured"
        rows.append((name, shown, f"≤ {limit:g} µs", verdict(cpu, limit)))

    for folder, when in [("compare", "right after the 1 KB load"), ("settled", "settled")]:
        name = "uniproxy-1k" if folder == "compare" else "uniproxy-1k-settled"
        try:
            o = json.loads((out / folder / name / "overhead.json").read_text())
            p50, p99 = o["overhead_p50_ms"], o["overhead_p99_ms"]
        except (OSError, ValueError, KeyError):
            p50 = p99 = None
        ok = verdict(p50, LATENCY_P50_MS) if p99 is None else (
            "✓" if p50 <= LATENCY_P50_MS and p99 <= LATENCY_P99_MS else "✗")
        shown = f"+{p50:.3f} / +{p99:.3f} ms" if p99 is not None else "not measured"
        rows.append((f"added latency p50 / p99, {when}", shown,
                     f"≤ {LATENCY_P50_MS:g} / {LATENCY_P99_MS:g} ms", ok))

    streams = read(out / "streams.txt")
    idle = number(read(out / "idle_rss.txt"), "rss_idle_mb") or number(streams, "rss_idle_mb")
    rows.append(("idle RSS", f"{idle:.1f} MiB" if idle else "not measured",
                 f"≤ {RSS_IDLE_MB:g} MB", verdict(idle, RSS_IDLE_MB)))
    after = number(read(out / "idle_rss.txt"), "rss_after_loads_mb")
    if after is not None:
        # Read for the record: the target is stated for a proxy at rest, which this one was
        # not before its loads.
        rows.append(("idle RSS after the loads", f"{after:.1f} MiB", "(no target)", "—"))
    open_mb = number(streams, "rss_open_mb")
    opened = number(streams, "opened")
    ok = verdict(open_mb, RSS_STREAMS_MB) if opened == 1000 else "✗ not all 1,000 opened"
    rows.append(("RSS with 1,000 open streams", f"{open_mb:.1f} MiB" if open_mb else "not measured",
                 f"≤ {RSS_STREAMS_MB:g} MB", ok))

    start = number(read(out / "startup_ms.txt").split("\n")[0], "median_ms")
    rows.append(("start-up to first answer, new database",
                 f"{start:.1f} ms" if start is not None else "not measured",
                 f"≤ {STARTUP_MS:g} ms", verdict(start, STARTUP_MS)))

    entries = read(out / "entries.txt")
    sent, logged = number(entries, "sent"), number(entries, "logged")
    rows.append(("log entries written / requests sent",
                 f"{logged:,.0f} / {sent:,.0f}" if sent is not None and logged is not None
                 else "not measured", "equal",
                 "✓" if sent is not None and sent > 0 and sent == logged else "✗"))

    print("== against the targets (issue 7; every uniproxy request logged in full)")
    wide = max(len(r[0]) for r in rows)
    for what, measured, target, ok in rows:
        print(f"{what:<{wide}}  {measured:<40} {target:<18} {ok}")
    judged = [r for r in rows if r[3] != "—"]
    missed = sum(1 for r in judged if not r[3].startswith("✓"))
    print(f"TARGETS met={len(judged) - missed} missed={missed}")


if __name__ == "__main__":
    main()
