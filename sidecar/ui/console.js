// webhook-relay dead-letter console. Plain script, no build step, no dependencies.
// Everything it shows comes from the admin API (../v1/, relative so it works through
// kubectl port-forward and behind a path prefix) with the token the user gives; all data
// goes into the page as text (textContent), never as markup.
(() => {
  'use strict';

  const API = '../v1/';
  const TOKEN_KEY = 'webhook-relay.admin-token';
  const REFRESH_MS = 3000;
  const WINDOW_MS = 10 * 60 * 1000;
  const MIN_SPAN_MS = 60 * 1000;
  const BULK_MAX_CALLS = 500;
  const STATUS_PATTERN = /^([1-5][0-9][0-9]|[1-5][xX][xX]|none|any)$/;
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  let token = null;
  let generation = 0; // bumped when the token goes: answers to older requests are dropped
  let timer = null;
  let samples = []; // {t, due, inFlight, dead}, the last WINDOW_MS
  let cursors = [null]; // the cursor of each page visited; the last is the current page
  let nextCursor = null;
  let listedDead = null; // the dead figure when the list was last loaded
  let selected = null; // the id shown in the detail panel
  let pendingConfirm = null;
  let counted = null; // {key, matched} of the last dry run, for the Replay button
  let tickFailed = false; // the message shown is the refresh's own failure

  class Unauthorized extends Error {}
  class Stale extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // ---- the admin API ----

  async function api(method, path, query) {
    const gen = generation;
    const qs = query ? '?' + new URLSearchParams(query).toString() : '';
    let r;
    try {
      r = await fetch(API + path + qs, {
        method,
        headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
    } catch (e) {
      throw new ApiError(0, 'Cannot reach the relay\'s admin API (' + e.message + '). Retrying.');
    }
    const text = await r.text();
    if (gen !== generation) throw new Stale();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (_) {
        body = null;
      }
    }
    const why = body && typeof body.error === 'string' ? body.error : 'HTTP ' + r.status;
    if (r.status === 401) throw new Unauthorized(why);
    if (!r.ok) throw new ApiError(r.status, why);
    return body;
  }

  /** One path segment; `.` and `..` would be resolved away by the browser's URL parser. */
  function segment(id) {
    if (id === '.' || id === '..') {
      throw new ApiError(0, 'A browser cannot address the event id "' + id + '"; use webhook-relay dlq for it.');
    }
    return encodeURIComponent(id);
  }

  function fail(e) {
    if (e instanceof Stale) return;
    if (e instanceof Unauthorized) {
      signOut('The admin API refused this token (' + e.message + '). Nothing is shown; enter the right token.');
      return;
    }
    showMessage(e.message || String(e));
  }

  // ---- messages and small formatters ----

  function showMessage(text, kind) {
    const m = $('message');
    m.textContent = text;
    m.className = 'message ' + (kind || 'error');
    m.hidden = false;
  }

  function clearMessage() {
    $('message').hidden = true;
    $('message').textContent = '';
  }

  function setResult(id, text, kind) {
    const el = $(id);
    el.textContent = text;
    el.className = 'result' + (kind ? ' ' + kind : '');
  }

  const pad = (n) => String(n).padStart(2, '0');

  function localTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function age(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  function ago(iso) {
    const t = new Date(iso).getTime();
    return Number.isNaN(t) ? '' : age((Date.now() - t) / 1000) + ' ago';
  }

  const count = (n) => Number(n).toLocaleString('en-US');

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // ---- token ----

  /** Takes `token=` out of the fragment (and the address bar); returns it, or null. */
  function tokenFromFragment() {
    const hash = location.hash.replace(/^#/, '');
    if (!hash) return null;
    let found = null;
    const rest = [];
    for (const part of hash.split('&')) {
      if (part.startsWith('token=')) {
        try {
          found = decodeURIComponent(part.slice(6));
        } catch (_) {
          found = part.slice(6);
        }
      } else if (part) {
        rest.push(part);
      }
    }
    if (found !== null) {
      history.replaceState(null, '', location.pathname + location.search + (rest.length ? '#' + rest.join('&') : ''));
    }
    return found;
  }

  function storage(action, value) {
    try {
      if (action === 'get') return sessionStorage.getItem(TOKEN_KEY);
      if (action === 'set') sessionStorage.setItem(TOKEN_KEY, value);
      if (action === 'remove') sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (a locked-down browser): the token lives in this page only.
    }
    return null;
  }

  function signIn(t) {
    token = t;
    storage('set', t);
    generation += 1;
    clearMessage();
    $('login').hidden = true;
    $('session').hidden = false;
    // The console shows only once the token is accepted (see tick).
    cursors = [null];
    listedDead = null;
    tick();
  }

  function signOut(message) {
    generation += 1;
    clearTimeout(timer);
    token = null;
    storage('remove');
    clearData();
    $('console').hidden = true;
    $('session').hidden = true;
    $('login').hidden = false;
    $('token-input').value = '';
    if (message) showMessage(message);
    else clearMessage();
    $('token-input').focus();
  }

  /** Removes every figure and row from the page. */
  function clearData() {
    for (const id of ['fig-due', 'fig-inflight', 'fig-dead', 'fig-oldest', 'fig-blocked']) $(id).textContent = '\u2014';
    $('destination').textContent = '';
    $('updated').textContent = '';
    $('dead-count').textContent = '';
    $('dead-rows').replaceChildren();
    $('dead-empty').hidden = true;
    $('page-info').textContent = '';
    setResult('action-result', '');
    setResult('bulk-result', '');
    samples = [];
    drawChart();
    closeDetail();
    resetCount();
  }

  // ---- refresh loop ----

  async function tick() {
    clearTimeout(timer);
    const gen = generation;
    try {
      await refreshStats();
      $('console').hidden = false;
      if (listedDead !== samples[samples.length - 1].dead) await loadPage();
      if (tickFailed) clearMessage();
      tickFailed = false;
    } catch (e) {
      if (!(e instanceof Unauthorized) && !(e instanceof Stale)) tickFailed = true;
      fail(e);
    }
    if (gen === generation && token !== null) timer = setTimeout(tick, REFRESH_MS);
  }

  async function refreshStats() {
    const s = await api('GET', 'stats');
    $('fig-due').textContent = count(s.due);
    $('fig-inflight').textContent = count(s.inFlight);
    $('fig-dead').textContent = count(s.dead);
    $('fig-oldest').textContent = age(s.oldestDueAgeSeconds);
    $('fig-blocked').textContent = count(s.blocked || 0);
    $('fig-blocked').title = s.oldestBlocked
      ? `${count(s.waitingKeys)} keys waiting; longest: ${s.oldestBlocked.key}, ${age(s.oldestBlocked.ageSeconds)}`
      : 'no ordering key waiting';
    $('destination').textContent = destinationText(s.destination || {});
    $('updated').textContent = 'updated ' + localTime(new Date().toISOString()).slice(11);
    const now = Date.now();
    samples.push({ t: now, due: s.due, inFlight: s.inFlight, dead: s.dead });
    samples = samples.filter((p) => p.t >= now - WINDOW_MS);
    drawChart();
  }

  function destinationText(d) {
    const parts = [];
    if (d.pausedUntil) parts.push('destination paused until ' + localTime(d.pausedUntil) + ' (Retry-After)');
    if (d.circuit) {
      const c = d.circuit;
      let t = 'circuit ' + c.state.replace('_', '-');
      if (c.since) t += ' since ' + localTime(c.since);
      t += ', ' + c.consecutiveFailures + ' of ' + c.failureThreshold + ' failures';
      if (c.nextProbeAt) t += ', next probe ' + localTime(c.nextProbeAt);
      parts.push(t);
    }
    if (d.rateLimit) parts.push('rate limit ' + d.rateLimit.perSecond + '/s, burst ' + d.rateLimit.burst);
    return parts.length ? parts.join(' \u00b7 ') : 'destination: no pause, no circuit breaker, no rate limit';
  }

  // ---- chart ----

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const chart = $('chart');
    const [W, H, L, R, T, B] = [720, 170, 44, 8, 10, 22];
    const now = Date.now();
    // The span grows with the samples up to the window, so a page just opened has a line to show.
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, samples.length ? now - samples[0].t : 0));
    const x = (t) => L + ((t - (now - span)) / span) * (W - L - R);
    const top = niceMax(Math.max(0, ...samples.map((p) => Math.max(p.due, p.inFlight, p.dead))));
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const parts = [];
    for (const v of [0, top / 2, top]) {
      parts.push(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
      parts.push(svg('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, count(v)));
    }
    for (const [f, anchor] of [[1, 'start'], [0.5, 'middle'], [0, 'end']]) {
      const label = f === 0 ? 'now' : '-' + age((span * f) / 1000).replace(' 0s', '');
      parts.push(svg('text', { x: x(now - span * f), y: H - 6, class: 'axis', 'text-anchor': anchor }, label));
    }
    for (const [key, cls] of [['due', 'due'], ['inFlight', 'inflight'], ['dead', 'dead']]) {
      if (!samples.length) break;
      const pts = samples.map((p) => x(p.t).toFixed(1) + ',' + y(p[key]).toFixed(1)).join(' ');
      parts.push(svg('polyline', { points: pts, class: 'series ' + cls }));
      const last = samples[samples.length - 1];
      parts.push(svg('circle', { cx: x(last.t), cy: y(last[key]), r: 3, class: 'dot ' + cls }));
    }
    chart.replaceChildren(...parts);
    chart.dataset.samples = String(samples.length);
  }

  // ---- dead letters ----

  function pageSize() {
    return $('page-size').value;
  }

  function listQuery() {
    return { state: 'dead', limit: pageSize(), order: $('order').value };
  }

  async function loadPage() {
    const cursor = cursors[cursors.length - 1];
    const query = listQuery();
    if (cursor) query.cursor = cursor;
    let page = await api('GET', 'events', query);
    if (!page.items.length && cursors.length > 1) {
      // Everything on this page moved on meanwhile: start over.
      cursors = [null];
      page = await api('GET', 'events', listQuery());
    }
    listedDead = samples.length ? samples[samples.length - 1].dead : null;
    nextCursor = page.nextCursor || null;
    renderRows(page.items);
  }

  function renderRows(items) {
    const rows = items.map((ev) => {
      const tr = document.createElement('tr');
      tr.dataset.id = ev.id;
      tr.tabIndex = 0;
      if (ev.id === selected) tr.classList.add('selected');
      const idCell = el('td', ev.id, 'id');
      idCell.title = ev.id;
      tr.append(idCell);
      const at = el('td', localTime(ev.deadAt), 'time');
      at.title = ev.deadAt + ' (' + ago(ev.deadAt) + ')';
      tr.append(at);
      tr.append(el('td', ev.attempts, 'num'));
      tr.append(el('td', ev.lastStatus === null || ev.lastStatus === undefined ? 'none' : ev.lastStatus, 'num status'));
      tr.append(el('td', ev.lastError || '', 'error-text'));
      return tr;
    });
    $('dead-rows').replaceChildren(...rows);
    $('dead-empty').hidden = rows.length > 0;
    const dead = samples.length ? samples[samples.length - 1].dead : null;
    $('dead-count').textContent = dead === null ? '' : '(' + count(dead) + ')';
    $('page-info').textContent = 'page ' + cursors.length;
    $('prev-page').disabled = cursors.length < 2;
    $('first-page').disabled = cursors.length < 2;
    $('next-page').disabled = !nextCursor;
  }

  function rowFor(target) {
    const tr = target.closest('tr');
    return tr && tr.dataset.id !== undefined && $('dead-rows').contains(tr) ? tr : null;
  }

  // ---- one event ----

  async function openDetail(id) {
    selected = id;
    for (const tr of $('dead-rows').children) tr.classList.toggle('selected', tr.dataset.id === id);
    hideConfirm();
    let ev;
    try {
      ev = await api('GET', 'events/' + segment(id));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        setResult('action-result', 'Event ' + id + ' is gone (delivered, replayed or deleted meanwhile).', 'warn');
        closeDetail();
        reloadList();
        return;
      }
      throw e;
    }
    if (selected !== id) return;
    $('detail-id').textContent = ev.id;
    const fields = [
      ['State', ev.state],
      ['Received', localTime(ev.receivedAt)],
      ['Dead since', ev.deadAt ? localTime(ev.deadAt) + ' (' + ago(ev.deadAt) + ')' : ''],
      ['Next attempt', ev.nextAttemptAt ? localTime(ev.nextAttemptAt) : ''],
      ['Attempts', ev.attempts],
      ['Last attempt', localTime(ev.lastAttemptAt)],
      ['Last status', ev.lastStatus === null || ev.lastStatus === undefined ? 'none' : ev.lastStatus],
      ['Last error', ev.lastError || ''],
      ['Content type', ev.contentType],
      ['traceparent', ev.traceparent || ''],
    ];
    const dl = $('detail-fields');
    dl.replaceChildren();
    for (const [k, v] of fields) {
      if (v === '' || v === undefined || v === null) continue;
      dl.append(el('dt', k), el('dd', v));
    }
    if (ev.payloadEncoding === 'json') {
      $('payload-encoding').textContent = '(JSON)';
      $('payload').textContent = JSON.stringify(ev.payload, null, 2);
    } else {
      $('payload-encoding').textContent = '(not JSON: base64)';
      $('payload').textContent = String(ev.payload);
    }
    $('replay-one').disabled = ev.state === 'inflight' || ev.state === 'blocked';
    $('delete-one').disabled = ev.state === 'inflight';
    $('detail').hidden = false;
  }

  function closeDetail() {
    selected = null;
    $('detail').hidden = true;
    $('detail-fields').replaceChildren();
    $('payload').textContent = '';
    $('detail-id').textContent = '';
    hideConfirm();
    for (const tr of $('dead-rows').children) tr.classList.remove('selected');
  }

  function askConfirm(text, button, action) {
    pendingConfirm = action;
    $('confirm-text').textContent = text;
    $('confirm-yes').textContent = button;
    $('confirm').hidden = false;
    $('confirm-yes').focus();
  }

  function hideConfirm() {
    pendingConfirm = null;
    $('confirm').hidden = true;
  }

  async function replayOne(id) {
    const r = await api('POST', 'events/' + segment(id) + '/replay');
    setResult('action-result', 'Replayed ' + r.id + ' (was ' + r.previousState + '); it is due now.', 'ok');
    closeDetail();
    await reloadList();
  }

  async function deleteOne(id) {
    await api('DELETE', 'events/' + segment(id));
    setResult('action-result', 'Deleted ' + id + '.', 'ok');
    closeDetail();
    await reloadList();
  }

  async function reloadList() {
    await refreshStats();
    await loadPage();
  }

  // ---- filtered replay ----

  /** The filter as API query parameters; throws on a bad status. */
  function bulkFilter() {
    const q = {};
    const status = $('bulk-status').value.trim();
    if (status) {
      if (!STATUS_PATTERN.test(status)) {
        throw new ApiError(400, 'Last status must be a code (503), a class (5xx) or none; got "' + status + '".');
      }
      q.status = status;
    }
    const error = $('bulk-error').value;
    if (error) q.error = error;
    for (const name of ['since', 'until']) {
      const v = $('bulk-' + name).value;
      if (v) {
        const d = new Date(v); // datetime-local: local time
        if (Number.isNaN(d.getTime())) throw new ApiError(400, 'Dead ' + name + ' is not a time.');
        q[name] = d.toISOString();
      }
    }
    return q;
  }

  function describe(q) {
    const parts = [];
    if (q.status) parts.push('last status ' + q.status);
    if (q.error) parts.push('error containing "' + q.error + '"');
    if (q.since) parts.push('dead since ' + localTime(q.since));
    if (q.until) parts.push('until ' + localTime(q.until));
    return parts.length ? parts.join(', ') : 'every dead letter';
  }

  /** Runs a bulk request to its end, following its cursor. */
  async function bulk(q, dryRun) {
    let [matched, scanned, changed, cursor] = [0, 0, 0, null];
    for (let i = 0; i < BULK_MAX_CALLS; i++) {
      const query = Object.assign({}, q);
      if (dryRun) query.dryRun = 'true';
      if (cursor) query.cursor = cursor;
      const r = await api('POST', 'dead/replay', query);
      matched += r.matched;
      scanned += r.scanned;
      changed += r.replayed || 0;
      if (r.done) return { matched, scanned, changed, done: true };
      cursor = r.cursor;
      setResult('bulk-result', (dryRun ? 'Counting' : 'Replaying') + '\u2026 ' + count(matched) + ' so far');
    }
    return { matched, scanned, changed, done: false };
  }

  function resetCount() {
    counted = null;
    $('bulk-replay').disabled = true;
    $('bulk-replay').textContent = 'Replay';
  }

  async function countFiltered() {
    resetCount();
    const q = bulkFilter();
    setResult('bulk-result', 'Counting\u2026');
    const r = await bulk(q, true);
    const more = r.done ? '' : ' (stopped early: more may match)';
    setResult('bulk-result', count(r.matched) + ' dead letter(s) match ' + describe(q) + ', of ' + count(r.scanned) +
      ' looked at' + more + '. Dry run: nothing changed.', 'ok');
    $('bulk-result').dataset.matched = String(r.matched);
    counted = { key: JSON.stringify(q), matched: r.matched };
    $('bulk-replay').textContent = 'Replay ' + count(r.matched);
    $('bulk-replay').disabled = r.matched === 0;
  }

  async function replayFiltered() {
    const q = bulkFilter();
    if (!counted || counted.key !== JSON.stringify(q)) {
      resetCount();
      setResult('bulk-result', 'The filter changed: count again first.', 'warn');
      return;
    }
    $('bulk-replay').disabled = true;
    setResult('bulk-result', 'Replaying\u2026');
    const r = await bulk(q, false);
    resetCount();
    setResult('bulk-result', 'Replayed ' + count(r.changed) + ' dead letter(s) (' + describe(q) + '); they are due now.' +
      (r.done ? '' : ' Stopped early: count again for the rest.'), 'ok');
    delete $('bulk-result').dataset.matched;
    await reloadList();
  }

  // ---- wiring ----

  /** An event handler running `f`; its failure goes to the result line `resultId` (or the message). */
  function guarded(f, resultId) {
    return (ev) => {
      if (ev) ev.preventDefault();
      Promise.resolve().then(f).catch((e) => {
        if (resultId && !(e instanceof Unauthorized) && !(e instanceof Stale)) setResult(resultId, e.message, 'error');
        else fail(e);
      });
    };
  }

  function wire() {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token-input').value.trim();
      if (t) signIn(t);
    });
    $('forget').addEventListener('click', () => signOut(''));
    $('reload').addEventListener('click', guarded(() => reloadList()));
    for (const control of ['page-size', 'order']) {
      $(control).addEventListener('change', guarded(() => {
        cursors = [null];
        return loadPage();
      }));
    }
    $('next-page').addEventListener('click', guarded(() => {
      if (!nextCursor) return null;
      cursors.push(nextCursor);
      return loadPage();
    }));
    $('prev-page').addEventListener('click', guarded(() => {
      if (cursors.length > 1) cursors.pop();
      return loadPage();
    }));
    $('first-page').addEventListener('click', guarded(() => {
      cursors = [null];
      return loadPage();
    }));
    $('dead-rows').addEventListener('click', (ev) => {
      const tr = rowFor(ev.target);
      if (tr) openDetail(tr.dataset.id).catch(fail);
    });
    $('dead-rows').addEventListener('keydown', (ev) => {
      const tr = rowFor(ev.target);
      if (tr && (ev.key === 'Enter' || ev.key === ' ')) {
        ev.preventDefault();
        openDetail(tr.dataset.id).catch(fail);
      }
    });
    $('detail-close').addEventListener('click', () => closeDetail());
    $('replay-one').addEventListener('click', () => {
      const id = selected;
      if (id === null) return;
      askConfirm('Replay ' + id + ' now? It becomes due at once with its attempts reset.', 'Replay ' + id,
        () => replayOne(id));
    });
    $('delete-one').addEventListener('click', () => {
      const id = selected;
      if (id === null) return;
      askConfirm('Delete ' + id + ' and its payload? This cannot be undone.', 'Delete ' + id, () => deleteOne(id));
    });
    $('confirm-yes').addEventListener('click', guarded(() => {
      const action = pendingConfirm;
      hideConfirm();
      return action ? action() : null;
    }, 'action-result'));
    $('confirm-no').addEventListener('click', () => hideConfirm());
    $('bulk-form').addEventListener('submit', guarded(() => countFiltered(), 'bulk-result'));
    $('bulk-form').addEventListener('input', () => {
      if (counted) {
        resetCount();
        setResult('bulk-result', '');
      }
    });
    $('bulk-replay').addEventListener('click', guarded(() => replayFiltered(), 'bulk-result'));
  }

  function start() {
    wire();
    drawChart();
    const fromFragment = tokenFromFragment();
    const t = fromFragment !== null && fromFragment !== '' ? fromFragment : storage('get');
    if (t) signIn(t);
    else signOut('');
  }

  start();
})();
