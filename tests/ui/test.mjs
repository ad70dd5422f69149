// The log viewer in a real browser: headless Chromium from Debian's packages, driven by
// playwright-core. Run through run.sh, which starts the proxy and sends the traffic first.
// Saves a screenshot of each view under docs/screenshots/ and ends with
// `ui: N passed, N failed`.
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const shots = join(here, '..', '..', 'docs', 'screenshots');
const base = process.env.UI_BASE;
const key = process.env.UI_KEY;
const TOTAL = 61; // what traffic.mjs sends

let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL - ${name}\n       ${String(e && e.stack || e).split('\n').slice(0, 4).join('\n       ')}`);
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

const rowCount = (page) => page.locator('#rows tr').count();

// Back to the list view from wherever a failed check left the page.
async function toList(page) {
  if (await page.locator('#view-requests').isHidden()) {
    await page.evaluate(() => { window.location.hash = '#/requests'; });
    await page.waitForSelector('#view-requests', { state: 'visible' });
  }
}

async function waitRows(page, pred, what) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const n = await rowCount(page);
    if (pred(n)) return n;
    if (Date.now() > deadline) throw new Error(`${what}: ${n} rows`);
    await page.waitForTimeout(50);
  }
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'uniproxy-ui-chromium-'));
  mkdirSync(shots, { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    viewport: { width: 1280, height: 860 },
  });
  const page = context.pages()[0] || await context.newPage();
  const scriptErrors = [];
  page.on('pageerror', (e) => scriptErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Uncaught/i.test(m.text())) scriptErrors.push(m.text());
  });
  let dialogs = 0;
  page.on('dialog', (d) => { dialogs += 1; d.dismiss().catch(() => {}); });

  try {
    await check('the page asks for a key, and a wrong key is refused', async () => {
      const r = await page.goto(`${base}/ui`);
      expect(r.status() === 401, `status ${r.status()}`);
      await page.fill('#key', 'not-the-key');
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      expect(await page.locator('#key').count() === 1, 'no login form after a wrong key');
    });

    await check('logging in shows the recent requests, newest first', async () => {
      await page.fill('#key', key);
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      await waitRows(page, (n) => n === 50, 'first page');
      const first = await page.locator('#rows tr').first().innerText();
      expect(first.includes('stream'), `newest row is the streamed <script> prompt: ${first}`);
      const statuses = await page.locator('#rows tr td:nth-child(2)').allInnerTexts();
      expect(statuses.includes('400'), 'the failed requests are listed');
      const header = await page.locator('#requests thead').innerText();
      for (const col of ['Time', 'Status', 'Model', 'Stream', 'Latency', 'TTFT', 'Tokens']) {
        expect(header.includes(col), `column ${col}`);
      }
      expect((await page.locator('#rows tr').first().innerText()).includes('gpt-4o → uniproxy-mock'), 'client → actual model');
      await page.screenshot({ path: join(shots, 'requests.png') });
    });

    await check('paging goes to older entries and back', async () => {
      expect(!(await page.locator('#older').isDisabled()), 'older is enabled');
      await page.click('#older');
      await waitRows(page, (n) => n === TOTAL - 50, 'second page');
      expect(await page.locator('#older').isDisabled(), 'no third page');
      await page.click('#newer');
      await waitRows(page, (n) => n === 50, 'back to the first page');
    });

    await check('a status filter narrows the rows', async () => {
      await page.selectOption('#f-status', '4xx');
      await page.click('#f-apply');
      await waitRows(page, (n) => n === 2, 'status 4xx');
      const statuses = await page.locator('#rows tr td:nth-child(2)').allInnerTexts();
      expect(statuses.every((s) => s.trim() === '400'), statuses.join(','));
    });

    await check('a text search narrows the rows', async () => {
      await page.selectOption('#f-status', '');
      await page.fill('#f-search', 'giraffe');
      await page.click('#f-apply');
      await waitRows(page, (n) => n === 2, 'search giraffe');
      await page.selectOption('#f-range', '900000');
      await page.click('#f-apply');
      await waitRows(page, (n) => n === 2, 'search giraffe in the last 15 minutes');
    });

    await check('an entry opens with its full content', async () => {
      // The streamed giraffe request is the newer of the two.
      await page.locator('#rows tr').first().click();
      await page.waitForSelector('#entry-meta dt');
      for (const key of ['client_request', 'upstream_request', 'response', 'headers', 'message']) {
        expect(await page.locator(`[data-section="${key}"]`).count() === 1, `section ${key}`);
      }
      const client = await page.locator('[data-section="client_request"] pre').innerText();
      expect(client.includes('"content": "A giraffe in a stream, please"'), `pretty-printed request: ${client}`);
      const upstream = await page.locator('[data-section="upstream_request"] pre').innerText();
      expect(upstream.includes('uniproxy-mock'), 'the upstream request names the actual model');
      const message = await page.locator('[data-testid="message-text"]').first().innerText();
      expect(message.includes('giraffe'), `the assembled message: ${message}`);
      const meta = await page.locator('#entry-meta').innerText();
      expect(/time to first token/i.test(meta) && /latency/i.test(meta), `timings are shown: ${meta}`);
      await page.click('#back');
      await waitRows(page, (n) => n > 0, 'back to the list');
    });

    await check('an entry with tool calls shows them', async () => {
      await toList(page);
      await page.fill('#f-search', 'weather in Paris');
      await page.click('#f-apply');
      await waitRows(page, (n) => n === 1, 'search Paris');
      await page.locator('#rows tr').first().click();
      await page.waitForSelector('[data-section="message"] .tool');
      const tool = await page.locator('[data-section="message"] .tool').first().innerText();
      expect(tool.includes('get_weather'), tool);
      await page.click('#back');
    });

    await check('a prompt with <script> shows as text and runs nothing', async () => {
      await toList(page);
      await page.fill('#f-search', '__pwned');
      await page.click('#f-apply');
      await waitRows(page, (n) => n === 1, 'search __pwned');
      await page.locator('#rows tr').first().click();
      await page.waitForSelector('[data-section="client_request"] pre');
      const client = await page.locator('[data-section="client_request"] pre').innerText();
      expect(client.includes('<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>'), client);
      const message = await page.locator('[data-testid="message-text"]').first().innerText();
      expect(message.includes('<script>window.__pwned=1</script>'), `the echoed answer as text: ${message}`);
      await page.waitForTimeout(300);
      const pwned = await page.evaluate(() => window.__pwned);
      expect(pwned === undefined, `window.__pwned = ${pwned}`);
      const injected = await page.evaluate(() => document.querySelectorAll('img[src="x"], main script').length);
      expect(injected === 0, `${injected} injected elements`);
      expect(dialogs === 0, `${dialogs} dialogs`);
      await page.screenshot({ path: join(shots, 'entry.png'), fullPage: false });
    });

    await check('the summary draws its charts', async () => {
      await page.click('#nav-summary');
      await page.waitForSelector('#chart-requests svg rect');
      const requests = await page.locator('#cards .card').first().innerText();
      expect(requests.includes(String(TOTAL)), `request count card: ${requests}`);
      expect(await page.locator('#chart-requests svg rect.req').count() > 0, 'request bars');
      expect(await page.locator('#chart-requests svg rect.err').count() > 0, 'error bars');
      expect(await page.locator('#chart-latency svg rect').count() >= 3, 'percentile bars');
      expect(await page.locator('#chart-latency-series svg circle').count() > 0, 'latency points');
      expect(await page.locator('#chart-tokens svg rect.tok').count() > 0, 'token bars');
      const box = await page.locator('#chart-requests svg').boundingBox();
      expect(box && box.width > 200 && box.height > 60, `chart size ${JSON.stringify(box)}`);
      await page.selectOption('#s-range', '300000');
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(shots, 'summary.png'), fullPage: true });
    });

    await check('no script error and no CSP violation on any view', async () => {
      expect(scriptErrors.length === 0, scriptErrors.join('\n'));
    });

    await check('the JSON endpoints refuse a request without the key', async () => {
      const r = await fetch(`${base}/api/logs`);
      expect(r.status === 401, `status ${r.status}`);
      const body = await r.json();
      expect(body.error && body.error.type === 'authentication_error', JSON.stringify(body));
    });
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main()
  .catch((e) => {
    failed += 1;
    console.log(`FAIL - the browser could not be driven: ${e.message}`);
  })
  .finally(() => {
    console.log(`ui: ${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
  });
