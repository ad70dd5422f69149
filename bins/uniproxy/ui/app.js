// The uniproxy log viewer. Plain JavaScript, no dependencies, no build step.
//
// Every piece of logged content (prompts, answers, errors, model names, headers) is untrusted:
// it is only ever put on the page with textContent or createTextNode, never innerHTML, and the
// page's Content-Security-Policy forbids inline scripts on top of that.
'use strict';

(function () {
  const PAGE = 50;
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // Builds an element; string and number children become text nodes.
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function showError(message) {
    const box = $('error');
    if (!message) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    box.textContent = message;
    box.hidden = false;
  }

  async function api(path) {
    const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (r.status === 401) {
      // The session ended (the proxy restarted): back to the login form.
      window.location.assign('/ui');
      throw new Error('not logged in');
    }
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      throw new Error(`${path}: HTTP ${r.status}`);
    }
    if (!r.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${r.status}`);
    return body;
  }

  // ---- formatting -------------------------------------------------------------------------

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return '—';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtShortTime(ms, spanMs) {
    const d = new Date(ms);
    if (spanMs > 2 * 86400000) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}h`;
    if (spanMs > 3 * 3600000) return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms >= 10000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
    return `${ms} ms`;
  }

  // Axis labels: fractions of a millisecond matter when everything is fast.
  function fmtAxisMs(ms) {
    if (ms > 0 && ms < 10) return `${Number(ms.toFixed(2))} ms`;
    return fmtMs(Math.round(ms));
  }

  function fmtNum(n) {
    if (n === null || n === undefined) return '—';
    return Number(n).toLocaleString('en-US');
  }

  function statusClass(status) {
    if (status >= 500 || status === 499) return 'status s5';
    if (status >= 400) return 'status s4';
    return 'status s2';
  }

  // Pretty JSON when the text is JSON, the text itself otherwise.
  function pretty(text) {
    if (text === null || text === undefined || text === '') return '';
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return String(text);
    }
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return null;
    }
  }

  // ---- requests view ----------------------------------------------------------------------

  const list = {
    filters: {},
    cursors: [], // the `before` of each page shown so far; [null] is the newest page
    next: null,
  };

  function readFilters() {
    const f = {};
    const status = $('f-status').value;
    if (status) f.status = status;
    const range = $('f-range').value;
    if (range === 'custom') {
      const from = $('f-from').value;
      const to = $('f-to').value;
      if (from) f.from = String(new Date(from).getTime());
      if (to) f.to = String(new Date(to).getTime());
    } else if (range) {
      f.from = String(Date.now() - Number(range));
    }
    const model = $('f-model').value.trim();
    if (model) f.model = model;
    const search = $('f-search').value.trim();
    if (search) f.search = search;
    return f;
  }

  async function loadPage(before) {
    const q = new URLSearchParams(list.filters);
    q.set('limit', String(PAGE));
    if (before !== null && before !== undefined) q.set('before', String(before));
    let page;
    try {
      page = await api(`/api/logs?${q}`);
    } catch (e) {
      showError(`Could not load the requests: ${e.message}`);
      return;
    }
    showError(null);
    list.next = page.next_before;
    renderRows(page.items);
    $('newer').disabled = list.cursors.length <= 1;
    $('older').disabled = list.next === null || list.next === undefined;
    $('page-info').textContent = `page ${list.cursors.length}`;
  }

  function renderRows(items) {
    const body = $('rows');
    clear(body);
    $('empty').hidden = items.length > 0;
    for (const it of items) {
      const id = Number(it.id);
      const usage = it.usage || {};
      const tokens = usage.prompt_tokens === undefined && usage.completion_tokens === undefined
        ? '—'
        : `${fmtNum(usage.prompt_tokens || 0)} / ${fmtNum(usage.completion_tokens || 0)}`;
      const models = it.client_model === it.actual_model || !it.client_model
        ? el('span', {}, it.actual_model || '')
        : el('span', {}, el('span', { class: 'muted' }, it.client_model), ' → ', it.actual_model);
      const row = el('tr', { 'data-id': id, class: 'row', tabindex: '0' },
        el('td', { class: 'time' }, el('a', { href: `#/entry/${id}` }, fmtTime(it.received_ms))),
        el('td', {}, el('span', { class: statusClass(it.status), title: it.error_type || '' }, it.status)),
        el('td', { class: 'model' }, models),
        el('td', {}, it.stream ? 'stream' : '—'),
        el('td', { class: 'num' }, fmtMs(it.latency_ms)),
        el('td', { class: 'num' }, it.stream ? fmtMs(it.ttft_ms) : '—'),
        el('td', { class: 'num' }, tokens));
      const open = () => { window.location.hash = `#/entry/${id}`; };
      row.addEventListener('click', (ev) => { if (ev.target.tagName !== 'A') open(); });
      row.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
      body.appendChild(row);
    }
  }

  function applyFilters() {
    list.filters = readFilters();
    list.cursors = [null];
    loadPage(null);
  }

  function showRequests() {
    if (list.cursors.length === 0) {
      applyFilters();
    } else {
      loadPage(list.cursors[list.cursors.length - 1]);
    }
  }

  // ---- entry view -------------------------------------------------------------------------

  function section(title, content, opts) {
    const s = el('section', { class: 'block', 'data-section': (opts && opts.key) || title });
    s.appendChild(el('h2', {}, title));
    if (typeof content === 'string') {
      s.appendChild(el('pre', { class: 'code' }, content || '(empty)'));
    } else {
      s.appendChild(content);
    }
    return s;
  }

  // The answer's text and tool calls, for a stream (assembled) or a plain completion.
  function messageOf(response) {
    const r = parseJson(response);
    if (!r || !Array.isArray(r.choices)) return null;
    const wrap = el('div', { class: 'message' });
    for (const c of r.choices) {
      const msg = c.message || c;
      const head = `choice ${c.index ?? 0}${c.finish_reason ? ` · finish: ${c.finish_reason}` : ''}`;
      wrap.appendChild(el('div', { class: 'muted' }, head));
      if (msg.reasoning_content) wrap.appendChild(el('pre', { class: 'code reasoning' }, msg.reasoning_content));
      const content = typeof msg.content === 'string' ? msg.content : (msg.content ? JSON.stringify(msg.content, null, 2) : '');
      wrap.appendChild(el('pre', { class: 'code text', 'data-testid': 'message-text' }, content || '(no text)'));
      if (msg.refusal) wrap.appendChild(el('pre', { class: 'code' }, `refusal: ${msg.refusal}`));
      for (const t of msg.tool_calls || []) {
        const name = t.name || (t.function && t.function.name) || '';
        const args = t.arguments ?? (t.function && t.function.arguments) ?? '';
        wrap.appendChild(el('div', { class: 'tool' },
          el('div', {}, 'tool call ', el('code', {}, name), ' ', el('span', { class: 'muted' }, t.id || '')),
          el('pre', { class: 'code' }, pretty(args))));
      }
    }
    return wrap;
  }

  async function showEntry(id) {
    clear($('entry-meta'));
    clear($('entry-sections'));
    $('entry-error').hidden = true;
    $('entry-title').textContent = `Entry ${id}`;
    let e;
    try {
      e = await api(`/api/logs/${encodeURIComponent(id)}`);
    } catch (err) {
      showError(`Could not load entry ${id}: ${err.message}`);
      return;
    }
    showError(null);
    $('entry-title').textContent = e.request_id || `Entry ${id}`;
    const usage = e.usage || {};
    const meta = [
      ['Status', el('span', { class: statusClass(e.status) }, e.status)],
      ['Received', fmtTime(e.received_ms)],
      ['First byte', fmtTime(e.first_byte_ms)],
      ['Finished', fmtTime(e.finished_ms)],
      ['Latency', fmtMs(e.latency_ms)],
      ['Time to first token', e.stream ? fmtMs(e.ttft_ms) : '—'],
      ['Client model', e.client_model],
      ['Actual model', e.actual_model],
      ['Platform', e.platform],
      ['Stream', e.stream ? 'yes' : 'no'],
      ['Attempts', e.attempts],
      ['Prompt tokens', fmtNum(usage.prompt_tokens)],
      ['Completion tokens', fmtNum(usage.completion_tokens)],
      ['Total tokens', fmtNum(usage.total_tokens)],
      ['Client', e.client_addr || '—'],
      ['User agent', e.user_agent || '—'],
      ['Key hash', e.key_hash || '—'],
    ];
    if (usage.cached_tokens) meta.push(['Cached tokens', fmtNum(usage.cached_tokens)]);
    if (usage.reasoning_tokens) meta.push(['Reasoning tokens', fmtNum(usage.reasoning_tokens)]);
    if (e.dropped_fields && e.dropped_fields.length) meta.push(['Dropped fields', e.dropped_fields.join(', ')]);
    const dl = $('entry-meta');
    for (const [k, v] of meta) {
      dl.appendChild(el('div', { class: 'meta-item' }, el('dt', {}, k), el('dd', {}, v === undefined || v === null ? '—' : v)));
    }
    if (e.error_type || e.error_message) {
      const box = $('entry-error');
      clear(box);
      box.appendChild(el('strong', {}, e.error_type || 'error'));
      box.appendChild(document.createTextNode(`: ${e.error_message || ''}`));
      box.hidden = false;
    }
    const out = $('entry-sections');
    const message = messageOf(e.response);
    if (message) out.appendChild(section(e.stream ? 'Message (assembled from the stream)' : 'Message', message, { key: 'message' }));
    out.appendChild(section('Request as the client sent it', pretty(e.client_request), { key: 'client_request' }));
    out.appendChild(section('Request as it went upstream', pretty(e.upstream_request), { key: 'upstream_request' }));
    out.appendChild(section(e.stream ? 'Response (assembled)' : 'Response', pretty(e.response), { key: 'response' }));
    out.appendChild(section('Request headers (secrets redacted)', pretty(e.request_headers), { key: 'headers' }));
    if (e.raw_chunks) out.appendChild(section('Raw stream frames', e.raw_chunks, { key: 'raw' }));
  }

  // ---- summary view -----------------------------------------------------------------------

  function card(label, value, extra) {
    return el('div', { class: 'card' }, el('div', { class: 'card-value' }, value), el('div', { class: 'card-label' }, label),
      extra ? el('div', { class: 'muted small' }, extra) : null);
  }

  // Fills the buckets the store left out (no requests) with zeros.
  function fullSeries(stats) {
    const by = new Map(stats.series.map((b) => [b.start_ms, b]));
    const step = stats.bucket_ms;
    const out = [];
    const first = Math.floor(stats.from_ms / step) * step;
    for (let t = first; t < stats.to_ms && out.length < 5000; t += step) {
      out.push(by.get(t) || { start_ms: t, requests: 0, errors: 0, tokens: 0, p50_latency_ms: null });
    }
    return out;
  }

  const W = 640;
  const H = 220;
  const M = { l: 56, r: 12, t: 12, b: 28 };

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function axes(root, maxY, fmtY, buckets, span) {
    const ih = H - M.t - M.b;
    for (let i = 0; i <= 4; i++) {
      const v = (maxY * i) / 4;
      const y = M.t + ih - (ih * i) / 4;
      root.appendChild(svg('line', { x1: M.l, x2: W - M.r, y1: y, y2: y, class: 'grid' }));
      root.appendChild(svg('text', { x: M.l - 6, y: y + 4, 'text-anchor': 'end', class: 'tick' }, fmtY(v)));
    }
    const iw = W - M.l - M.r;
    const n = buckets.length;
    const every = Math.max(1, Math.ceil(n / 6));
    for (let i = 0; i < n; i += every) {
      const x = M.l + (iw * (i + 0.5)) / n;
      root.appendChild(svg('text', { x, y: H - 8, 'text-anchor': 'middle', class: 'tick' }, fmtShortTime(buckets[i].start_ms, span)));
    }
  }

  function barChart(target, buckets, layers, fmtY, span) {
    clear(target);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'svgchart', role: 'img' });
    const maxY = niceMax(Math.max(0, ...buckets.map((b) => layers[0].value(b))));
    axes(root, maxY, fmtY, buckets, span);
    const iw = W - M.l - M.r;
    const ih = H - M.t - M.b;
    const bw = iw / Math.max(1, buckets.length);
    buckets.forEach((b, i) => {
      for (const layer of layers) {
        const v = layer.value(b);
        if (!(v > 0)) continue;
        const h = (ih * v) / maxY;
        const rect = svg('rect', {
          x: M.l + i * bw + bw * 0.1, y: M.t + ih - h, width: Math.max(1, bw * 0.8), height: h, class: layer.cls,
        });
        rect.appendChild(svg('title', {}, `${fmtTime(b.start_ms)} · ${layer.name}: ${fmtNum(v)}`));
        root.appendChild(rect);
      }
    });
    target.appendChild(root);
    target.appendChild(legend(layers));
  }

  function lineChart(target, buckets, value, fmtY, span, name) {
    clear(target);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'svgchart', role: 'img' });
    const vals = buckets.map(value);
    const maxY = niceMax(Math.max(0, ...vals.filter((v) => v !== null)));
    axes(root, maxY, fmtY, buckets, span);
    const iw = W - M.l - M.r;
    const ih = H - M.t - M.b;
    const n = buckets.length;
    const points = [];
    vals.forEach((v, i) => {
      if (v === null) return;
      points.push([M.l + (iw * (i + 0.5)) / n, M.t + ih - (ih * v) / maxY, v, buckets[i].start_ms]);
    });
    if (points.length) {
      const d = points.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
      root.appendChild(svg('path', { d, class: 'line' }));
    }
    for (const [x, y, v, t] of points) {
      const dot = svg('circle', { cx: x, cy: y, r: 3, class: 'dot' });
      dot.appendChild(svg('title', {}, `${fmtTime(t)} · ${name}: ${fmtMs(v)}`));
      root.appendChild(dot);
    }
    target.appendChild(root);
  }

  function percentileChart(target, stats) {
    clear(target);
    const groups = [['latency', stats.latency], ['time to first token', stats.ttft]];
    const keys = ['p50', 'p90', 'p99'];
    const maxY = niceMax(Math.max(0, ...groups.flatMap(([, p]) => (p ? keys.map((k) => p[k]) : [0]))));
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'svgchart', role: 'img' });
    const ih = H - M.t - M.b;
    for (let i = 0; i <= 4; i++) {
      const y = M.t + ih - (ih * i) / 4;
      root.appendChild(svg('line', { x1: M.l, x2: W - M.r, y1: y, y2: y, class: 'grid' }));
      root.appendChild(svg('text', { x: M.l - 6, y: y + 4, 'text-anchor': 'end', class: 'tick' }, fmtAxisMs((maxY * i) / 4)));
    }
    const gw = (W - M.l - M.r) / groups.length;
    groups.forEach(([name, p], g) => {
      const x0 = M.l + g * gw;
      root.appendChild(svg('text', { x: x0 + gw / 2, y: H - 8, 'text-anchor': 'middle', class: 'tick' }, name));
      if (!p) return;
      const bw = (gw * 0.7) / keys.length;
      keys.forEach((k, i) => {
        const v = p[k];
        const h = (ih * v) / maxY;
        const x = x0 + gw * 0.15 + i * bw;
        const rect = svg('rect', { x: x + 2, y: M.t + ih - h, width: bw - 4, height: Math.max(0, h), class: `bar ${k}` });
        rect.appendChild(svg('title', {}, `${name} ${k}: ${fmtMs(v)}`));
        root.appendChild(rect);
        root.appendChild(svg('text', { x: x + bw / 2, y: M.t + ih - h - 4, 'text-anchor': 'middle', class: 'tick' }, `${k} ${fmtMs(v)}`));
      });
    });
    target.appendChild(root);
  }

  function legend(layers) {
    return el('div', { class: 'legend' }, ...layers.map((l) => el('span', { class: `key ${l.cls}` }, l.name)));
  }

  async function showSummary() {
    const range = Number($('s-range').value);
    const to = Date.now();
    const from = to - range;
    let stats;
    try {
      stats = await api(`/api/stats?from=${from}&to=${to}`);
    } catch (e) {
      showError(`Could not load the summary: ${e.message}`);
      return;
    }
    showError(null);
    const cards = $('cards');
    clear(cards);
    cards.appendChild(card('requests', fmtNum(stats.requests)));
    cards.appendChild(card('errors', fmtNum(stats.errors), `${(stats.error_rate * 100).toFixed(1)} %`));
    cards.appendChild(card('latency p50 / p99', stats.latency ? `${fmtMs(stats.latency.p50)} / ${fmtMs(stats.latency.p99)}` : '—'));
    cards.appendChild(card('TTFT p50', stats.ttft ? fmtMs(stats.ttft.p50) : '—'));
    cards.appendChild(card('tokens in / out', `${fmtNum(stats.prompt_tokens)} / ${fmtNum(stats.completion_tokens)}`));
    const buckets = fullSeries(stats);
    const span = stats.to_ms - stats.from_ms;
    barChart($('chart-requests'), buckets, [
      { name: 'requests', cls: 'bar req', value: (b) => b.requests },
      { name: 'errors', cls: 'bar err', value: (b) => b.errors },
    ], (v) => fmtNum(Math.round(v)), span);
    percentileChart($('chart-latency'), stats);
    lineChart($('chart-latency-series'), buckets, (b) => (b.requests ? b.p50_latency_ms : null), fmtAxisMs, span, 'p50 latency');
    barChart($('chart-tokens'), buckets, [
      { name: 'tokens', cls: 'bar tok', value: (b) => b.tokens },
    ], (v) => fmtNum(Math.round(v)), span);
  }

  // ---- navigation -------------------------------------------------------------------------

  function show(view) {
    for (const v of ['requests', 'entry', 'summary']) $(`view-${v}`).hidden = v !== view;
    $('nav-requests').classList.toggle('active', view !== 'summary');
    $('nav-summary').classList.toggle('active', view === 'summary');
  }

  function route() {
    const h = window.location.hash || '#/requests';
    const entry = /^#\/entry\/(\d+)$/.exec(h);
    if (entry) {
      show('entry');
      showEntry(entry[1]);
    } else if (h === '#/summary') {
      show('summary');
      showSummary();
    } else {
      show('requests');
      showRequests();
    }
  }

  async function health() {
    try {
      const r = await fetch('/health', { headers: { Accept: 'application/json' } });
      const h = await r.json();
      $('health').textContent = `${h.platform} · ${h.model} · v${h.version} · log store ${h.log_store && h.log_store.state}`;
    } catch (_) {
      $('health').textContent = '';
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('filters').addEventListener('submit', (ev) => { ev.preventDefault(); applyFilters(); });
    $('f-range').addEventListener('change', () => {
      const custom = $('f-range').value === 'custom';
      for (const l of document.querySelectorAll('.custom')) l.hidden = !custom;
    });
    $('f-reset').addEventListener('click', () => { $('filters').reset(); applyFilters(); });
    $('older').addEventListener('click', () => {
      if (list.next === null || list.next === undefined) return;
      list.cursors.push(list.next);
      loadPage(list.next);
    });
    $('newer').addEventListener('click', () => {
      if (list.cursors.length <= 1) return;
      list.cursors.pop();
      loadPage(list.cursors[list.cursors.length - 1]);
    });
    $('summary-form').addEventListener('submit', (ev) => { ev.preventDefault(); showSummary(); });
    $('s-range').addEventListener('change', showSummary);
    window.addEventListener('hashchange', route);
    health();
    route();
  });
})();
