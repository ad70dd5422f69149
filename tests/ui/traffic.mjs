// Real traffic for the UI test: chat requests through the proxy's mock platform, streamed and
// not, with tool calls, client errors, a prompt full of HTML, and enough rows for two pages.
const base = process.env.UI_BASE;
const key = process.env.UI_KEY;

export const XSS = '<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>';

async function waitForHealth() {
  const deadline = Date.now() + 20000;
  for (;;) {
    try {
      const r = await fetch(`${base}/health`);
      if (r.ok) return;
    } catch (_) { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error('the proxy did not come up');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function chat(body, raw) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: raw ?? JSON.stringify(body),
  });
  await r.text(); // read the whole answer (a stream ends when it is read)
  return r.status;
}

const user = (content) => [{ role: 'user', content }];
const tools = [{
  type: 'function',
  function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
}];

async function main() {
  await waitForHealth();
  const statuses = [];
  // Spread over about 15 s, so the summary's charts (5 s buckets over the last 5 minutes)
  // have more than one bar.
  for (let i = 0; i < 54; i++) {
    statuses.push(await chat({ model: i % 3 ? 'gpt-4o' : 'gpt-4o-mini', stream: i % 2 === 0, messages: user(`Question number ${i}: count to ${i % 7 + 2}`) }));
    if (i === 20) statuses.push(await chat(null, '{"model": "gpt-4o", "messages": '));
    if (i === 40) statuses.push(await chat({ model: 'gpt-4o', messages: 'not a list' }));
    await new Promise((r) => setTimeout(r, 250));
  }
  statuses.push(await chat({ model: 'gpt-4o', messages: user('Tell me about the giraffe') }));
  statuses.push(await chat({ model: 'gpt-4o', stream: true, messages: user('A giraffe in a stream, please') }));
  statuses.push(await chat({ model: 'gpt-4o', stream: true, tools, messages: user('What is the weather in Paris?') }));
  statuses.push(await chat({ model: 'gpt-4o', tools, messages: user('What is the weather in Oslo?') }));
  statuses.push(await chat({ model: 'gpt-4o', stream: true, messages: user(XSS) }));
  const ok = statuses.filter((s) => s === 200).length;
  const bad = statuses.filter((s) => s === 400).length;
  if (ok !== statuses.length - 2 || bad !== 2) throw new Error(`unexpected statuses: ${statuses.join(',')}`);
  // The store's writer thread writes in batches: wait until every row is listed.
  const deadline = Date.now() + 20000;
  for (;;) {
    const r = await fetch(`${base}/api/logs?limit=1&total=true`, { headers: { authorization: `Bearer ${key}` } });
    const page = await r.json();
    if (page.total >= statuses.length) break;
    if (Date.now() > deadline) throw new Error(`only ${page.total} of ${statuses.length} rows stored`);
    await new Promise((res) => setTimeout(res, 100));
  }
  console.log(`traffic: ${statuses.length} requests sent and stored`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`traffic: ${e.message}`);
    console.log('ui: 0 passed, 1 failed');
    process.exit(1);
  });
}
