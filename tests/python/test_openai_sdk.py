"""The official `openai` Python SDK against the built uniproxy binary: the mock platform, and
an Anthropic-shaped upstream started by the test.

Run by .ci/run (tests/python/run.py; `python -m unittest discover -s tests/python -v` by hand)
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

    def test_azure_clients(self):
        # Azure OpenAI's client puts the deployment in the path, sends `api-version` in the
        # query and its key as `api-key`; pointed at the proxy, it is served the same.
        azure = openai.AzureOpenAI(azure_endpoint=self.proxy.url, api_key="sk-proxy-test",
                                   api_version="2024-10-21", max_retries=0)
        r = azure.chat.completions.create(
            model="my-deployment", messages=[{"role": "user", "content": "Hello from Azure"}])
        self.assertEqual(r.choices[0].message.content, "Hello from Azure")
        self.assertEqual(r.model, "mock-1")
        stream = azure.chat.completions.create(
            model="my-deployment", stream=True, messages=[{"role": "user", "content": "a b"}])
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in stream if c.choices), "a b")
        self.assertEqual([m.id for m in azure.models.list()], ["mock-1"])
        self.assertEqual(azure.models.retrieve("my-deployment").id, "mock-1")
        bad = openai.AzureOpenAI(azure_endpoint=self.proxy.url, api_key="sk-wrong",
                                 api_version="2024-10-21", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.chat.completions.create(model="d", messages=[{"role": "user", "content": "hi"}])
        # Azure's v1 API is the OpenAI client on `…/openai/v1`.
        v1 = openai.OpenAI(base_url=self.proxy.url + "/openai/v1", api_key="sk-proxy-test",
                           max_retries=0)
        r = v1.chat.completions.create(model="x", messages=[{"role": "user", "content": "v1"}])
        self.assertEqual(r.choices[0].message.content, "v1")
        self.assertEqual([m.id for m in v1.models.list()], ["mock-1"])

    def test_models(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["mock-1"])
        # Any name retrieves the model that serves it, as a chat request naming it would.
        for name in ["mock-1", "gpt-4o"]:
            self.assertEqual(self.client.models.retrieve(name).id, "mock-1")

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


class QueuedUpstream:
    """An upstream (Claude's Messages API, an OpenAI-compatible server: the path is not read)
    that records each request and answers the next queued body."""

    def __init__(self):
        import http.server
        import threading

        self.requests, self.answers = [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append((self.path, json.loads(body)))
                answer = outer.answers.pop(0)
                # A string is a stream's events, as written; anything else a JSON answer.
                kind = "text/event-stream" if isinstance(answer, str) else "application/json"
                answer = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def message(content, stop_reason):
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 21, "output_tokens": 9}}


class BehindTheProxy(unittest.TestCase):
    """A proxy set by `settings` in front of an upstream that answers the queued bodies, and
    an SDK client of the proxy; a base for the cases below, with no test of its own."""

    settings = {}

    @classmethod
    def setUpClass(cls):
        cls.upstream = QueuedUpstream()
        cls.proxy = Proxy(BASE_URL=cls.upstream.url, **cls.settings)
        cls.client = openai.OpenAI(base_url=cls.proxy.url + "/v1", api_key="none", max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.upstream.stop()


class AnthropicPlatform(BehindTheProxy):
    """What the SDK's helpers send, translated for Claude, and Claude's answers back."""

    settings = {"TYPE": "anthropic", "API_KEY": "sk-ant-test", "ACTUAL_NAME": "claude-sonnet-4-5"}

    def test_parse_with_a_pydantic_model_uses_structured_outputs(self):
        import pydantic

        class Weather(pydantic.BaseModel):
            city: str
            temperature_c: int

        self.upstream.answers.append(
            message([{"type": "text", "text": '{"city": "Paris", "temperature_c": 18}'}], "end_turn"))
        completion = self.client.chat.completions.parse(
            model="gpt-4o", messages=[{"role": "user", "content": "Weather in Paris?"}],
            response_format=Weather)
        self.assertEqual(completion.choices[0].message.parsed, Weather(city="Paris", temperature_c=18))
        path, sent = self.upstream.requests[-1]
        self.assertEqual(path, "/v1/messages")
        schema = sent["output_config"]["format"]
        self.assertEqual(schema["type"], "json_schema")
        self.assertEqual(schema["schema"]["required"], ["city", "temperature_c"])
        self.assertFalse(schema["schema"]["additionalProperties"])

    def test_json_object_comes_as_the_content(self):
        self.upstream.answers.append(message(
            [{"type": "tool_use", "id": "toolu_01", "name": "json_answer",
              "input": {"colours": ["red", "green", "blue"]}}], "tool_use"))
        completion = self.client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Three colours, as JSON."}],
            response_format={"type": "json_object"})
        choice = completion.choices[0]
        self.assertEqual(json.loads(choice.message.content), {"colours": ["red", "green", "blue"]})
        self.assertEqual((choice.finish_reason, choice.message.tool_calls), ("stop", None))
        sent = self.upstream.requests[-1][1]
        self.assertEqual(sent["tool_choice"], {"type": "tool", "name": "json_answer"})

    def test_a_tool_loop_with_reasoning_effort_keeps_thinking_given_back(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        self.upstream.answers.append(message(
            [{"type": "thinking", "thinking": "I should call the tool.", "signature": "EqQBCkY"},
             {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}],
            "tool_use"))
        first = self.client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=tools, reasoning_effort="low", max_tokens=4000)
        self.assertIn("thinking", self.upstream.requests[-1][1])
        call = first.choices[0].message.tool_calls[0]
        self.assertEqual((call.id, call.function.name), ("toolu_01", "get_weather"))
        self.assertEqual(first.choices[0].message.thinking_blocks[0]["signature"], "EqQBCkY")
        # The SDK's message goes back as it came, its signed thinking included, as OpenAI's
        # guide for function calling has it; and once more stripped to the OpenAI members.
        given_back = first.choices[0].message
        stripped = given_back.model_dump(include={"role", "tool_calls"}) | {"content": ""}
        for assistant, kinds in [(given_back, ["thinking", "tool_use"]), (stripped, ["tool_use"])]:
            self.upstream.answers.append(message([{"type": "text", "text": "18C in Paris."}], "end_turn"))
            loop = messages + [assistant, {"role": "tool", "tool_call_id": call.id, "content": "18C"}]
            second = self.client.chat.completions.create(
                model="gpt-4o", messages=loop, tools=tools, reasoning_effort="low", max_tokens=4000)
            self.assertEqual(second.choices[0].message.content, "18C in Paris.")
            sent = self.upstream.requests[-1][1]
            # Claude thinks in a tool loop only with its thinking given back.
            self.assertEqual("thinking" in sent, kinds[0] == "thinking", sent)
            self.assertEqual([b["type"] for b in sent["messages"][1]["content"]], kinds)

    def test_legacy_functions_loop_gets_function_calls(self):
        # An old function-calling agent: `functions`, the call given back as `function_call`,
        # its result as a `function` message; the SDK reads the legacy answer shape.
        functions = [{"name": "get_weather",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
        messages = [{"role": "user", "content": "Weather in Paris, then Lyon?"}]
        for city in ["Paris", "Lyon"]:
            self.upstream.answers.append(message(
                [{"type": "tool_use", "id": f"toolu_{city}", "name": "get_weather",
                  "input": {"city": city}}], "tool_use"))
            completion = self.client.chat.completions.create(
                model="gpt-3.5-turbo", messages=messages, functions=functions)
            choice = completion.choices[0]
            self.assertEqual(choice.finish_reason, "function_call")
            self.assertIsNone(choice.message.tool_calls)
            call = choice.message.function_call
            self.assertEqual((call.name, json.loads(call.arguments)), ("get_weather", {"city": city}))
            messages += [choice.message.model_dump(include={"role", "content", "function_call"}),
                         {"role": "function", "name": "get_weather", "content": "18C"}]
        sent = self.upstream.requests[-1][1]
        # Claude's rules: each tool_use answered by a tool_result with its id in the next turn.
        turns = sent["messages"]
        self.assertEqual([t["role"] for t in turns], ["user", "assistant", "user"])
        self.assertEqual(turns[1]["content"][0]["id"], turns[2]["content"][0]["tool_use_id"])
        self.assertTrue(sent["tool_choice"]["disable_parallel_tool_use"])

    def test_the_stream_helper_keeps_each_thinking_block(self):
        def event(kind, **data):
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        start = message([], None) | {"usage": {"input_tokens": 21, "output_tokens": 1}}
        events = [event("message_start", message=start)]
        for i, data in enumerate(["EqkECkYIBxgCKkA8", "EtgBCkYIBxgCKkDQ"]):
            block = {"type": "redacted_thinking", "data": data}
            events += [event("content_block_start", index=i, content_block=block),
                       event("content_block_stop", index=i)]
        events += [
            event("content_block_start", index=2,
                  content_block={"type": "thinking", "thinking": "", "signature": ""}),
            event("content_block_delta", index=2,
                  delta={"type": "thinking_delta", "thinking": "Say hi."}),
            event("content_block_delta", index=2,
                  delta={"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
            event("content_block_stop", index=2),
            event("content_block_start", index=3, content_block={"type": "text", "text": ""}),
            event("content_block_delta", index=3, delta={"type": "text_delta", "text": "Hi!"}),
            event("content_block_stop", index=3),
            event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                  usage={"output_tokens": 9}),
            event("message_stop"),
        ]
        self.upstream.answers.append("".join(events))
        with self.client.chat.completions.stream(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}],
                reasoning_effort="low", max_tokens=4000) as stream:
            final = stream.get_final_completion()
        self.assertTrue(self.upstream.requests[-1][1]["stream"])
        message_ = final.choices[0].message
        self.assertEqual(message_.content, "Hi!")
        self.assertEqual(message_.reasoning_content, "Say hi.")
        blocks = message_.thinking_blocks
        self.assertEqual([b["type"] for b in blocks],
                         ["redacted_thinking", "redacted_thinking", "thinking"])
        self.assertEqual((blocks[2]["thinking"], blocks[2]["signature"]), ("Say hi.", "EqQBCgIYAhIM"))


class GeminiOpenAIEndpoint(BehindTheProxy):
    """TYPE=custom in front of Google's OpenAI-compatible endpoint, which streams each tool
    call whole, without an index and with an empty id."""

    settings = {"TYPE": "custom", "API_KEY": "gemini-test", "ACTUAL_NAME": "gemini-2.5-flash"}

    def test_the_stream_helper_reads_tool_calls_sent_without_an_index(self):
        head = {"created": 1748902365, "id": "3SE-aKjdCcCEz7IPxpqjCA",
                "model": "gemini-2.5-flash", "object": "chat.completion.chunk"}

        def call(name, arguments):
            return {"function": {"arguments": arguments, "name": name}, "id": "",
                    "type": "function"}

        chunks = [
            {"choices": [{"delta": {"role": "assistant", "tool_calls": [
                call("get_time", "{}"), call("get_weather", '{"city":"Paris"}')]},
                "index": 0}]} | head,
            {"choices": [{"delta": {"role": "assistant"}, "finish_reason": "tool_calls",
                          "index": 0}]} | head,
        ]
        self.upstream.answers.append(
            "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n")
        tools = [{"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {}}}} for name in ["get_time", "get_weather"]]
        with self.client.chat.completions.stream(
                model="gpt-4o", messages=[{"role": "user", "content": "Time and weather?"}],
                tools=tools) as stream:
            final = stream.get_final_completion()
        calls = final.choices[0].message.tool_calls
        self.assertEqual([(c.function.name, c.function.arguments) for c in calls],
                         [("get_time", "{}"), ("get_weather", '{"city":"Paris"}')])
        self.assertEqual(final.choices[0].finish_reason, "tool_calls")

class OllamaEndpoint(BehindTheProxy):
    """TYPE=custom in front of Ollama, whose stream says the role in every delta."""

    settings = {"TYPE": "custom", "API_KEY": "ollama",
                "ACTUAL_NAME": "qwen2.5-coder:7b-instruct-q8_0"}

    def test_the_stream_helpers_message_can_be_sent_back(self):
        def chunk(content, finish=None):
            return {"id": "chatcmpl-192", "object": "chat.completion.chunk",
                    "created": 1744646668, "model": "qwen2.5-coder:7b-instruct-q8_0",
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                 "finish_reason": finish}]}

        chunks = [chunk("My"), chunk(" name"), chunk(" is"), chunk("", "stop")]
        self.upstream.answers.append(
            "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n")
        messages = [{"role": "user", "content": "Your name?"}]
        with self.client.chat.completions.stream(model="llama3", messages=messages) as stream:
            final = stream.get_final_completion()
        message_ = final.choices[0].message
        self.assertEqual((message_.role, message_.content), ("assistant", "My name is"))
        # The next turn sends it back, as agents do: the role was "assistantassistant…".
        self.upstream.answers.append({"id": "chatcmpl-193", "object": "chat.completion",
                                      "created": 1744646669, "model": "llama3",
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant",
                                                               "content": "Qwen."}}]})
        messages += [message_.model_dump(exclude_none=True), {"role": "user", "content": "Sure?"}]
        again = self.client.chat.completions.create(model="llama3", messages=messages)
        self.assertEqual(again.choices[0].message.content, "Qwen.")
        self.assertEqual(self.upstream.requests[-1][1]["messages"][1]["role"], "assistant")

if __name__ == "__main__":
    unittest.main()
