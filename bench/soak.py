#!/usr/bin/env python3
"""Soak test of the uniproxy release binary; loopback only, bounded in time.

Run it through bench/soak.sh, which builds the binary first. Standard library only.

It starts a mock upstream (good, slow, streamed and faulty answers: 500s and connections
reset before or in the middle of an answer) speaking --platform's format (openai, anthropic
or google: the same answers in each one's JSON and SSE shapes), starts the proxy against it
(TYPE=--platform), and drives --clients concurrent keep-alive clients for --seconds. Every
second it samples the proxy's VmRSS. Then:

  default  SIGTERM while the load is still running; the proxy must exit 0, and the log
           store must hold exactly one entry per response a client received.
  --kill9  SIGKILL in the middle of the load, restart on the same database, and
           PRAGMA integrity_check must say ok.

It checks that the proxy stayed up, that RSS at the end is within 20% (+8 MiB) of RSS after
warm-up, and that every request before the signal got a response or a clean error.
Exit status 0 when every check passed, 1 otherwise.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

# ----------------------------------------------------------------------------------------
# The mock upstream.
# ----------------------------------------------------------------------------------------

COMPLETION = json.dumps({
    "id": "chatcmpl-soak", "object": "chat.completion", "created": 1_743_073_438,
    "model": "soak-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11},
}).encode()

ERROR = json.dumps({"error": {"message": "The server had an error", "type": "server_error",
                              "param": None, "code": None}}).encode()


def chunk(delta, finish=None):
    return ("data: " + json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1_743_073_438,
        "model": "soak-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }) + "\n\n").encode()


# The same answers as Anthropic Messages and Gemini write them (fixtures/anthropic, fixtures/gemini):
# Anthropic's JSON compact; Gemini's with a space after each colon and none after commas, its
# stream events without `index`, the counts of the answer only in the last one.

def anthropic_json(value):
    return json.dumps(value, separators=(",", ":"))


def gemini_json(value):
    return json.dumps(value, separators=(",", ": "))


ANTHROPIC_USAGE = {"input_tokens": 8, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0,
                   "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                      "ephemeral_1h_input_tokens": 0},
                   "output_tokens": 3, "service_tier": "standard"}

ANTHROPIC_MESSAGE = anthropic_json({
    "model": "soak-model", "id": "msg_01Soak", "type": "message", "role": "assistant",
    "content": [{"type": "text", "text": "Hello there."}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": ANTHROPIC_USAGE,
}).encode()

ANTHROPIC_ERROR = anthropic_json({"type": "error", "error": {
    "type": "api_error", "message": "Internal server error"}}).encode()

GEMINI_RESPONSE = gemini_json({
    "candidates": [{"content": {"parts": [{"text": "Hello there."}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3, "totalTokenCount": 11},
    "modelVersion": "soak-model", "responseId": "soak-1",
}).encode()

GEMINI_ERROR = gemini_json({"error": {"code": 500, "message": "Internal error encountered.",
                                      "status": "INTERNAL"}}).encode()


def anthropic_event(name, data):
    return f"event: {name}\ndata: {anthropic_json(data)}\n\n".encode()


def gemini_chunk(text, last=False):
    candidate = {"content": {"parts": [{"text": text}], "role": "model"}}
    usage = {"promptTokenCount": 8, "totalTokenCount": 8}
    if last:
        candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 8, "candidatesTokenCount": 3, "totalTokenCount": 11}
    return ("data: " + gemini_json({
        "candidates": [candidate], "usageMetadata": usage,
        "modelVersion": "soak-model", "responseId": "soak-1",
    }) + "\r\n\r\n").encode()


class Shapes:
    """One platform's answer, error and stream events."""

    def __init__(self, platform):
        self.platform = platform
        self.answer = {"openai": COMPLETION, "anthropic": ANTHROPIC_MESSAGE,
                       "google": GEMINI_RESPONSE}[platform]
        self.error = {"openai": ERROR, "anthropic": ANTHROPIC_ERROR,
                      "google": GEMINI_ERROR}[platform]

    def is_stream(self, target, body):
        if self.platform == "google":
            return b":streamGenerateContent" in target
        return b'"stream":true' in body

    def stream_start(self):
        if self.platform == "anthropic":
            return anthropic_event("message_start", {"type": "message_start", "message": {
                "model": "soak-model", "id": "msg_01Soak", "type": "message",
                "role": "assistant", "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}}) + anthropic_event(
                "content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
        if self.platform == "google":
            return b""
        return chunk({"role": "assistant", "content": ""})

    def stream_piece(self, piece, last):
        if self.platform == "anthropic":
            return anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}})
        if self.platform == "google":
            return gemini_chunk(piece, last)
        return chunk({"content": piece})

    def stream_end(self):
        if self.platform == "anthropic":
            return (anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
                    + anthropic_event("message_delta", {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 3}})
                    + anthropic_event("message_stop", {"type": "message_stop"}))
        if self.platform == "google":
            return b""
        return chunk({}, "stop") + b"data: [DONE]\n\n"


def head(status, content_type, length=None, close=False):
    lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}"]
    lines.append(f"content-length: {length}" if length is not None else "connection: close")
    if close and length is not None:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Mock:
    """Answers by a weighted draw: good 55%, slow (200 ms) 20%, 500 8%, reset 7%; requests
    asking for a stream get a stream (10% of those reset halfway)."""

    def __init__(self, seed, platform):
        self.rng = random.Random(seed)
        self.served = 0
        self.shapes = Shapes(platform)

    async def handle(self, reader, writer):
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in raw.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.served += 1
                target = raw.split(b"\r\n", 1)[0]
                if not await self.answer(target, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def answer(self, target, body, writer):
        """Writes one answer; returns whether the connection stays open."""
        draw = self.rng.random()
        shapes = self.shapes
        answer, error = shapes.answer, shapes.error
        if shapes.is_stream(target, body):
            writer.write(head(200, "text/event-stream", close=True))
            writer.write(shapes.stream_start())
            pieces = ["Hel", "lo ", "the", "re."]
            for i, piece in enumerate(pieces):
                await asyncio.sleep(0.02)
                if draw < 0.10 and i == 2:
                    writer.transport.abort()  # reset mid-stream
                    return False
                writer.write(shapes.stream_piece(piece, i == len(pieces) - 1))
                await writer.drain()
            writer.write(shapes.stream_end())
            await writer.drain()
            return False
        if draw < 0.55:
            writer.write(head(200, "application/json", len(answer)) + answer)
        elif draw < 0.75:
            await asyncio.sleep(0.2)
            writer.write(head(200, "application/json", len(answer)) + answer)
        elif draw < 0.83:
            writer.write(head(500, "application/json", len(error)) + error)
        elif draw < 0.90:
            # Reset after half the answer.
            whole = head(200, "application/json", len(answer)) + answer
            writer.write(whole[: len(whole) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        else:
            await asyncio.sleep(0.05)
            writer.write(head(200, "application/json", len(answer)) + answer)
        await writer.drain()
        return True


# ----------------------------------------------------------------------------------------
# The clients.
# ----------------------------------------------------------------------------------------

REQUEST = json.dumps({"model": "soak", "messages": [
    {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]})
STREAM_REQUEST = REQUEST[:-1] + ', "stream": true}'


class Tally:
    def __init__(self):
        self.sent = 0  # requests written in full
        self.responses = 0  # responses read in full (any status)
        self.by_class = {}
        self.broken = []  # before the signal: anything that is neither an answer nor a clean error
        self.after_signal = 0  # connection failures after SIGTERM/SIGKILL (expected)

    def count(self, kind):
        self.by_class[kind] = self.by_class.get(kind, 0) + 1


async def read_response(reader):
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


def classify(status, headers, body, stream):
    """The response's class, or None when it is neither an answer nor a clean error."""
    try:
        if status == 200 and stream:
            events = [e[6:] for e in body.decode().split("\n\n") if e.startswith("data: ")]
            if events and events[-1] == "[DONE]":
                return "200 stream"
            last = json.loads(events[-1])
            return "200 stream, error event: " + last["error"]["type"]
        doc = json.loads(body)
        if status == 200:
            return "200" if doc["choices"][0]["message"]["content"] else None
        error = doc["error"]
        if all(k in error for k in ("message", "type", "param", "code")):
            return f"{status} {error['type']}"
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return None


async def client(port, deadline, tally, signalled, rng):
    reader = writer = None
    while time.monotonic() < deadline:
        stream = rng.random() < 0.25
        payload = (STREAM_REQUEST if stream else REQUEST).encode()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            await writer.drain()
            tally.sent += 1
            status, headers, body = await asyncio.wait_for(read_response(reader), 60)
            tally.responses += 1
            kind = classify(status, headers, body, stream)
            if kind is None:
                tally.broken.append(f"{status}: {body[:200]!r}")
            else:
                tally.count(kind)
                if status == 429:
                    await asyncio.sleep(float(headers.get("retry-after", "1")) * rng.random())
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            if signalled[0]:
                tally.after_signal += 1
                await asyncio.sleep(0.05)
            else:
                tally.broken.append(f"connection: {e!r}")
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


# ----------------------------------------------------------------------------------------
# The proxy process.
# ----------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(binary, workdir, port, upstream_port, concurrency, platform):
    base = "v1beta" if platform == "google" else "v1"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TYPE": platform, "BASE_URL": f"http://127.0.0.1:{upstream_port}/{base}",
        "API_KEY": "sk-soak", "ACTUAL_NAME": "soak-model",
        "HOST": "127.0.0.1", "PORT": str(port),
        "DATABASE_URL": os.path.join(workdir, "proxy.db"),
        "LOG_FILE_PATH": os.path.join(workdir, "proxy.log"),
        "CONCURRENCY_LIMIT": str(concurrency),
        "REQUEST_TIMEOUT": "30s",
    }
    stderr = open(os.path.join(workdir, "stderr.log"), "ab")
    proc = subprocess.Popen([binary], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("the proxy did not start; see " + os.path.join(workdir, "stderr.log"))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def db_count(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        db.close()


# ----------------------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------------------

async def run(args, binary, workdir):
    mock = Mock(args.seed, args.platform)
    upstream = await asyncio.start_server(mock.handle, "127.0.0.1", 0, backlog=1024)
    upstream_port = upstream.sockets[0].getsockname()[1]
    port = free_port()
    proc = start_proxy(binary, workdir, port, upstream_port, args.concurrency_limit,
                           args.platform)
    print(f"proxy pid {proc.pid} on 127.0.0.1:{port}, upstream 127.0.0.1:{upstream_port}, "
          f"{args.clients} clients for {args.seconds} s, folder {workdir}", flush=True)

    tally = Tally()
    signalled = [False]
    rng = random.Random(args.seed + 1)
    deadline = time.monotonic() + args.seconds + (2 if not args.kill9 else 0)
    clients = [asyncio.create_task(client(port, deadline, tally, signalled,
                                          random.Random(rng.random())))
               for _ in range(args.clients)]

    samples = []
    warm_after = max(3, args.seconds // 5)
    started = time.monotonic()
    signal_at = args.seconds / 2 if args.kill9 else args.seconds
    while time.monotonic() - started < signal_at:
        await asyncio.sleep(1)
        rss = rss_kib(proc.pid)
        alive = proc.poll() is None
        samples.append(rss)
        print(f"  t={time.monotonic() - started:5.1f}s rss={rss} KiB sent={tally.sent} "
              f"responses={tally.responses} alive={alive}", flush=True)
        if not alive:
            break
    up_until_signal = proc.poll() is None
    sent_before_signal = tally.sent
    broken_before_signal = len(tally.broken)
    signalled[0] = True
    ok = True
    report = {}
    if args.kill9:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await asyncio.gather(*clients)
        restarted = start_proxy(binary, workdir, port, upstream_port, args.concurrency_limit,
                           args.platform)
        integrity = sqlite3.connect(os.path.join(workdir, "proxy.db")).execute(
            "PRAGMA integrity_check").fetchone()[0]
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
        restarted.send_signal(signal.SIGTERM)
        code = restarted.wait(timeout=40)
        report["integrity_check"] = integrity
        report["restarted /health"] = health
        report["restart exit code"] = code
        report["entries after kill -9 (some queued entries die with the process)"] = \
            db_count(os.path.join(workdir, "proxy.db"))
        ok &= integrity == "ok" and health == 200 and code == 0
    else:
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*clients)
        code = proc.wait(timeout=40)
        entries = db_count(os.path.join(workdir, "proxy.db"))
        report["exit code after SIGTERM"] = code
        report["log entries in the database"] = entries
        report["responses received"] = tally.responses
        ok &= code == 0 and entries == tally.responses
        if entries != tally.responses:
            print(f"MISMATCH: {entries} entries for {tally.responses} responses")
    upstream.close()

    rss = [s for s in samples if s is not None]
    warm = rss[min(warm_after, len(rss)) - 1] if rss else None
    end = rss[-1] if rss else None
    flat = warm is not None and end <= warm * 1.2 + 8 * 1024
    report.update({
        "proxy up until the signal": up_until_signal,
        "requests sent": tally.sent,
        "requests sent before the signal": sent_before_signal,
        "responses by class": dict(sorted(tally.by_class.items(), key=lambda kv: -kv[1])),
        "broken before the signal (no answer, no clean error)": broken_before_signal,
        "connection failures after the signal (expected)": tally.after_signal,
        "requests the mock upstream served (retries included)": mock.served,
        "rss KiB after warm-up / end / max": (warm, end, max(rss) if rss else None),
        "rss flat (end <= 1.2 x warm-up + 8 MiB)": flat,
    })
    ok &= up_until_signal and broken_before_signal == 0 and flat
    print(json.dumps(report, indent=2))
    for b in tally.broken[:10]:
        print("  broken:", b)
    print("SOAK " + ("PASSED" if ok else "FAILED"))
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--concurrency-limit", type=int, default=200,
                   help="the proxy's CONCURRENCY_LIMIT; below --clients some requests get 429")
    p.add_argument("--kill9", action="store_true")
    p.add_argument("--platform", choices=["openai", "anthropic", "google"], default="openai",
                   help="the upstream's format (the proxy's TYPE)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    # The clients and the mock upstream share this process: a few hundred sockets each.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    workdir = tempfile.mkdtemp(prefix="uniproxy-soak-")
    ok = asyncio.run(run(args, os.path.abspath(args.binary), workdir))
    if not args.keep and ok:
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
