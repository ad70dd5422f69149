// The official openai Node SDK (openai-node) against the built binary: the mock platform, and
// an Anthropic-shaped upstream the test starts. Run through run.sh; ends with
// `openai-node: N passed, N failed`.
//
// openai-node's helpers differ from openai-python's where a proxy can trip them: its stream
// helper keeps the last value of a delta member it does not know (python's merges lists by
// `index`), and its tool runner gives the accumulated message back as it is.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

const bin = process.env.UNIPROXY_BIN;

let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL - ${name}\n       ${String((e && e.stack) || e).split('\n').slice(0, 4).join('\n       ')}`);
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, want ${e}`);
}

async function rejects(promise, Kind) {
  try {
    await promise;
  } catch (e) {
    expect(e instanceof Kind, `want ${Kind.name}, got ${e && e.constructor.name}: ${e}`);
    return e;
  }
  throw new Error(`want ${Kind.name}, got an answer`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// The binary in an empty folder of its own (so no developer's .env is read), on a free port.
async function startProxy(env) {
  const dir = mkdtempSync(join(tmpdir(), 'uniproxy-node-'));
  const port = await freePort();
  const child = spawn(bin, [], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: String(port),
      DATABASE_URL: `sqlite:///${dir}/proxy.db`,
      LOG_FILE_PATH: `${dir}/proxy.log`,
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`uniproxy did not start:\n${stderr.slice(-1000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A Messages API that records each request and answers the next queued body: a string is a
// stream's events as written, anything else a JSON answer.
async function anthropicUpstream() {
  const requests = [];
  const answers = [];
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => {
      requests.push({ path: req.url, body: JSON.parse(Buffer.concat(parts).toString('utf8')) });
      const answer = answers.shift();
      let status = 200;
      let type = typeof answer === 'string' ? 'text/event-stream' : 'application/json';
      let body = typeof answer === 'string' ? answer : JSON.stringify(answer);
      if (answer === undefined) {
        status = 500;
        type = 'application/json';
        body = JSON.stringify({ type: 'error', error: { type: 'api_error', message: 'no answer queued' } });
      }
      const bytes = Buffer.from(body, 'utf8');
      res.writeHead(status, { 'content-type': type, 'content-length': bytes.length });
      res.end(bytes);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    requests,
    answers,
    url: `http://127.0.0.1:${server.address().port}/v1`,
    stop: () => new Promise((r) => server.close(r)),
  };
}

function message(content, stopReason) {
  return {
    id: 'msg_01', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5',
    content, stop_reason: stopReason, stop_sequence: null,
    usage: { input_tokens: 21, output_tokens: 9 },
  };
}

function event(type, data = {}) {
  return `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
}

// A stream of Claude's shape: two redacted thinking blocks and a signed one (unless `thinking`
// is false), then `last` blocks.
function claudeStream(last, stopReason, thinking = true) {
  const start = { ...message([], null), usage: { input_tokens: 21, output_tokens: 1 } };
  const events = [event('message_start', { message: start })];
  if (thinking) {
    ['EqkECkYIBxgCKkA8', 'EtgBCkYIBxgCKkDQ'].forEach((data, index) => {
      events.push(event('content_block_start', { index, content_block: { type: 'redacted_thinking', data } }));
      events.push(event('content_block_stop', { index }));
    });
    events.push(
      event('content_block_start', { index: 2, content_block: { type: 'thinking', thinking: '', signature: '' } }),
      event('content_block_delta', { index: 2, delta: { type: 'thinking_delta', thinking: 'Think ' } }),
      event('content_block_delta', { index: 2, delta: { type: 'thinking_delta', thinking: 'first.' } }),
      event('content_block_delta', { index: 2, delta: { type: 'signature_delta', signature: 'EqQBCgIYAhIM' } }),
      event('content_block_stop', { index: 2 }),
    );
  }
  const first = thinking ? 3 : 0;
  last.forEach((block, i) => {
    const index = first + i;
    if (block.type === 'text') {
      events.push(
        event('content_block_start', { index, content_block: { type: 'text', text: '' } }),
        event('content_block_delta', { index, delta: { type: 'text_delta', text: block.text } }),
      );
    } else {
      events.push(
        event('content_block_start', { index, content_block: { ...block, input: {} } }),
        event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(block.input) } }),
      );
    }
    events.push(event('content_block_stop', { index }));
  });
  events.push(
    event('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: 9 } }),
    event('message_stop'),
  );
  return events.join('');
}

const THINKING_SENT = [
  { type: 'redacted_thinking', data: 'EqkECkYIBxgCKkA8' },
  { type: 'redacted_thinking', data: 'EtgBCkYIBxgCKkDQ' },
  { type: 'thinking', thinking: 'Think first.', signature: 'EqQBCgIYAhIM' },
];

const weatherTool = (calls) => ({
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    parse: JSON.parse,
    function: async ({ city }) => {
      calls.push(city);
      return `sunny in ${city}`;
    },
  },
});

if (!bin) {
  console.log('openai-node: UNIPROXY_BIN is not set');
  console.log('openai-node: 0 passed, 1 failed');
  process.exit(1);
}

// The mock platform: the answers the binary makes up itself.
{
  const proxy = await startProxy({ TYPE: 'mock', ACTUAL_NAME: 'mock-1', PROXY_API_KEYS: 'sk-proxy-test' });
  const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'sk-proxy-test', maxRetries: 0 });
  try {
    await check('create', async () => {
      const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello from Node' }] });
      equal(r.choices[0].message.content, 'Hello from Node', 'content');
      equal([r.model, r.choices[0].finish_reason], ['mock-1', 'stop'], 'model, finish_reason');
      expect(r.usage.total_tokens > 0, `usage ${JSON.stringify(r.usage)}`);
    });

    await check('a stream, with its usage', async () => {
      const stream = await client.chat.completions.create({
        model: 'gpt-4o', stream: true, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'one two three four' }],
      });
      let text = '';
      let finish = null;
      let usage = null;
      for await (const chunk of stream) {
        for (const c of chunk.choices) {
          text += c.delta.content ?? '';
          finish = c.finish_reason ?? finish;
        }
        usage = chunk.usage ?? usage;
      }
      equal([text, finish], ['one two three four', 'stop'], 'text, finish_reason');
      equal(usage && usage.completion_tokens, 4, 'completion_tokens');
    });

    await check('the stream helper', async () => {
      const stream = client.chat.completions.stream({ model: 'gpt-4o', messages: [{ role: 'user', content: 'a b c' }] });
      const deltas = [];
      stream.on('content.delta', ({ delta }) => deltas.push(delta));
      const final = await stream.finalChatCompletion();
      equal(final.choices[0].message.content, 'a b c', 'content');
      equal(deltas.join(''), 'a b c', 'content.delta events');
    });

    for (const stream of [false, true]) {
      await check(`runTools${stream ? ', streamed' : ''}: the tool runs and its answer comes back`, async () => {
        const calls = [];
        const runner = client.chat.completions.runTools({
          model: 'gpt-4o', stream, messages: [{ role: 'user', content: 'Paris' }], tools: [weatherTool(calls)],
        });
        const content = await runner.finalContent();
        equal(calls, ['Paris'], 'tool calls');
        expect(content.includes('sunny in Paris'), `final content ${JSON.stringify(content)}`);
        equal(runner.messages.map((m) => m.role), ['user', 'assistant', 'tool', 'assistant'], 'roles');
      });
    }

    await check('models.list and models.retrieve', async () => {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      equal(ids, ['mock-1'], 'listed');
      for (const name of ['mock-1', 'gpt-4o']) {
        equal((await client.models.retrieve(name)).id, 'mock-1', `retrieve ${name}`);
      }
    });

    await check('a bad request is a BadRequestError naming its param', async () => {
      const e = await rejects(
        client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 5 }] }),
        OpenAI.BadRequestError,
      );
      equal([e.status, e.param, e.type], [400, 'messages[0].content', 'invalid_request_error'], 'error');
    });

    await check('a wrong key is an AuthenticationError', async () => {
      const bad = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
      await rejects(
        bad.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
        OpenAI.AuthenticationError,
      );
    });
  } finally {
    await proxy.stop();
  }
}

// Claude: its thinking, through the SDK's helpers and back.
{
  const upstream = await anthropicUpstream();
  const proxy = await startProxy({
    TYPE: 'anthropic', BASE_URL: upstream.url, API_KEY: 'sk-ant-test', ACTUAL_NAME: 'claude-sonnet-4-5',
  });
  const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'none', maxRetries: 0 });
  const strip = (blocks) => blocks.map(({ index, ...block }) => block);
  try {
    await check('the stream helper keeps every thinking block', async () => {
      upstream.answers.push(claudeStream([{ type: 'text', text: 'Hi!' }], 'end_turn'));
      const stream = client.chat.completions.stream({
        model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }], reasoning_effort: 'low', max_tokens: 4000,
      });
      const final = await stream.finalChatCompletion();
      const m = final.choices[0].message;
      equal(m.content, 'Hi!', 'content');
      equal(strip(m.thinking_blocks ?? []), THINKING_SENT, 'thinking_blocks');
    });

    const paris = { type: 'tool_use', id: 'toolu_01', name: 'get_weather', input: { city: 'Paris' } };
    const loopStart = [{ role: 'user', content: 'Weather in Paris?' }];

    await check('a message given back as the stream helper made it keeps Claude thinking', async () => {
      const first = upstream.requests.length;
      upstream.answers.push(
        claudeStream([paris], 'tool_use'),
        claudeStream([{ type: 'text', text: '18C in Paris.' }], 'end_turn'),
      );
      const params = { model: 'gpt-4o', reasoning_effort: 'low', max_tokens: 4000, tools: [weatherTool([])] };
      const turn = await client.chat.completions.stream({ ...params, messages: loopStart }).finalChatCompletion();
      const m = turn.choices[0].message;
      equal(m.tool_calls.map((c) => [c.id, c.function.name]), [['toolu_01', 'get_weather']], 'the call');
      // openai-node's guide for function calling: the message goes back as it came.
      const messages = [...loopStart, m, { role: 'tool', tool_call_id: m.tool_calls[0].id, content: '18C' }];
      const answer = await client.chat.completions.stream({ ...params, messages }).finalChatCompletion();
      equal(answer.choices[0].message.content, '18C in Paris.', 'content');
      const sent = upstream.requests.slice(first).map((r) => r.body);
      equal(sent.length, 2, 'requests upstream');
      // Claude thinks in a tool loop only with its thinking given back, whole and first.
      equal(sent[1].thinking && sent[1].thinking.type, 'enabled', 'thinking');
      const assistant = sent[1].messages[1];
      equal(assistant.content.slice(0, 3), THINKING_SENT, 'thinking given back');
      equal(assistant.content.slice(3).map((b) => [b.type, b.id, b.input]), [['tool_use', 'toolu_01', { city: 'Paris' }]], 'the call');
    });

    await check('runTools, streamed, with reasoning_effort: the loop goes on without thinking', async () => {
      const calls = [];
      const first = upstream.requests.length;
      upstream.answers.push(
        claudeStream([paris], 'tool_use'),
        claudeStream([{ type: 'text', text: '18C in Paris.' }], 'end_turn', false),
      );
      const runner = client.chat.completions.runTools({
        model: 'gpt-4o', stream: true, reasoning_effort: 'low', max_tokens: 4000,
        messages: loopStart, tools: [weatherTool(calls)],
      });
      equal(await runner.finalContent(), '18C in Paris.', 'final content');
      equal(calls, ['Paris'], 'tool calls');
      const sent = upstream.requests.slice(first).map((r) => r.body);
      equal(sent.length, 2, 'requests upstream');
      // The runner replays only the request members of a message (openai-node 6), so the
      // blocks stay behind: Anthropic refuses thinking then, and the proxy leaves it off.
      equal(sent[0].thinking && sent[0].thinking.type, 'enabled', 'thinking in the first turn');
      equal(sent[1].thinking, undefined, 'thinking in the second turn');
      equal(sent[1].messages[1].content.map((b) => b.type), ['tool_use'], 'the assistant turn');
    });
  } finally {
    await proxy.stop();
    await upstream.stop();
  }
}

console.log(`openai-node: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
