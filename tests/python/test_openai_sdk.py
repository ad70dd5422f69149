"""The official `openai` Python SDK against the built uniproxy binary (mock platform).

Run by .ci/run:  python -m unittest discover -s tests/python -v
The binary path comes from UNIPROXY_BIN (default target/debug/uniproxy).
"""

import json
import os
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("UNIPROXY_BIN", os.path.join(ROOT, "target", "debug", "uniproxy"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    def __init__(self, **env):
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        full = {
            "PATH": os.environ.get("PATH", ""),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": f"sqlite:///{self.dir.name}/proxy.db",
            "LOG_FILE_PATH": f"{self.dir.name}/proxy.log",
        }
        full.update(env)
        self.proc = subprocess.Popen([BIN], cwd=self.dir.name, env=full,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("uniproxy did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


class MockPlatform(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = Proxy(ACTUAL_NAME="mock-1", PROXY_API_KEYS="sk-proxy-test")
        cls.client = openai.OpenAI(base_url=cls.proxy.url + "/v1", api_key="sk-proxy-test", max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()

    def test_chat(self):
        r = self.client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello from Python"}])
        self.assertEqual(r.choices[0].message.content, "Hello from Python")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertEqual(r.model, "mock-1")
        self.assertGreater(r.usage.total_tokens, 0)

    def test_stream(self):
        stream = self.client.chat.completions.create(
            model="gpt-4o", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "one two three four"}])
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        self.assertEqual(text, "one two three four")
        self.assertEqual(finish, "stop")
        self.assertIsNotNone(usage)
        self.assertEqual(usage.completion_tokens, 4)

    def test_tools(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}]
        r = self.client.chat.completions.create(
            model="gpt-4o", tools=tools, messages=[{"role": "user", "content": "Paris"}])
        call = r.choices[0].message.tool_calls[0]
        self.assertEqual(r.choices[0].finish_reason, "tool_calls")
        self.assertEqual(call.function.name, "get_weather")
        self.assertEqual(json.loads(call.function.arguments), {"city": "Paris"})
        # The tool's answer goes back; the mock then answers in text.
        r2 = self.client.chat.completions.create(model="gpt-4o", tools=tools, messages=[
            {"role": "user", "content": "Paris"},
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ])
        self.assertIn("sunny", r2.choices[0].message.content)

    def test_stream_tools(self):
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
        stream = self.client.chat.completions.create(
            model="gpt-4o", stream=True, tools=tools, messages=[{"role": "user", "content": "x"}])
        name, args, finish = "", "", None
        for chunk in stream:
            for c in chunk.choices:
                for tc in c.delta.tool_calls or []:
                    name += tc.function.name or ""
                    args += tc.function.arguments or ""
                finish = c.finish_reason or finish
        self.assertEqual(name, "lookup")
        self.assertEqual(json.loads(args), {"q": "x"})
        self.assertEqual(finish, "tool_calls")

    def test_bad_request_is_an_openai_error(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": 5}])
        body = cm.exception.body
        self.assertEqual(body["param"], "messages[0].content")
        self.assertEqual(body["type"], "invalid_request_error")

    def test_wrong_key_is_401(self):
        bad = openai.OpenAI(base_url=self.proxy.url + "/v1", api_key="sk-wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    def test_models(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["mock-1"])

    def test_health_needs_no_key(self):
        with urllib.request.urlopen(self.proxy.url + "/health", timeout=5) as r:
            health = json.load(r)
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["platform"], "mock")
        self.assertEqual(health["model"], "mock-1")


class DisabledModel(unittest.TestCase):
    def test_disabled_is_503(self):
        proxy = Proxy(ENABLED="false")
        try:
            client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="none", max_retries=0)
            with self.assertRaises(openai.InternalServerError) as cm:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            self.assertEqual(cm.exception.status_code, 503)
        finally:
            proxy.stop()


if __name__ == "__main__":
    unittest.main()
