// Drives the relay's console (/ui/) in Debian's headless Chromium through playwright-core.
// Run by sidecar/tests/console.rs, which starts Redis, a failing downstream and the relay,
// seeds dead letters and passes what to expect in the environment:
//   CONSOLE_URL       the admin listener, http://127.0.0.1:<port>
//   CONSOLE_TOKEN     the admin token
//   CONSOLE_SCENARIO  JSON: {dead, ids, show, showText, replay, remove, filter: {status}, filterCount}
//   CONSOLE_MODULES   the directory holding node_modules/playwright-core (scripts/ensure-chromium)
//   SCREENSHOT_DIR    where the PNGs go
//   CHROMIUM          the browser (default /usr/bin/chromium)
// Prints one line per check and "console test: all checks passed" at the end; exits 1 on
// the first failed check, 3 when the whole run takes longer than its limit.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const LIMIT_MS = 150_000;
const STEP_MS = 15_000;

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (sidecar/tests/console.rs sets it)`);
  return v;
};
const base = env('CONSOLE_URL');
const token = env('CONSOLE_TOKEN');
const scenario = JSON.parse(env('CONSOLE_SCENARIO'));
const shots = env('SCREENSHOT_DIR');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const require = createRequire(join(env('CONSOLE_MODULES'), 'package.json'));
const { chromium } = require('playwright-core');
const origin = new URL(base).origin;

let browser = null;
const watchdog = setTimeout(async () => {
  console.log(`console test: FAILED: still running after ${LIMIT_MS / 1000}s`);
  try {
    if (browser) await browser.close();
  } finally {
    process.exit(3);
  }
}, LIMIT_MS);

function check(cond, what, detail) {
  if (!cond) throw new Error(`${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
  console.log(`ok: ${what}`);
}

/** Records what a page does that the console must never do. */
function watch(page, problems, requests) {
  page.on('request', (r) => {
    const url = r.url();
    requests.push({ url, auth: r.headers()['authorization'] || '' });
    if (url.startsWith('data:')) return;
    if (new URL(url).origin !== origin) problems.push(`request outside the admin origin: ${url}`);
    if (url.includes(token)) problems.push(`the token is in a request URL: ${url}`);
  });
  page.on('console', (m) => {
    const t = m.text();
    if (/Content[- ]Security[- ]Policy|Refused to/i.test(t)) problems.push(`CSP: ${t}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/** Listens for securitypolicyviolation in every document (an init script runs outside the page's CSP). */
async function cspListener(context) {
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });
}

const rowIds = (page) => page.locator('#dead-rows tr').evaluateAll((rows) => rows.map((r) => r.dataset.id));
const text = (page, sel) => page.locator(sel).innerText();

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_MS, polling: 100 });
  } catch (e) {
    throw new Error(`${what} (waited ${STEP_MS / 1000}s): ${e.message.split('\n')[0]}`);
  }
  console.log(`ok: ${what}`);
}

const hasRows = (ids) => {
  const shown = [...document.querySelectorAll('#dead-rows tr')].map((r) => r.dataset.id);
  return ids.every((id) => shown.includes(id));
};
const lacksRow = (id) =>
  document.querySelectorAll('#dead-rows tr').length > 0 &&
  ![...document.querySelectorAll('#dead-rows tr')].some((r) => r.dataset.id === id);

/** datetime-local text for `ms` in the browser's (and this process's) time zone. */
function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const t0 = Date.now();
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'], timeout: 30_000 });
  console.log(`ok: chromium ${browser.version()} started in ${Date.now() - t0} ms`);
  const problems = [];

  // --- the right token, in the fragment ---
  const context = await browser.newContext({ viewport: { width: 1360, height: 1000 } });
  await cspListener(context);
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const requests = [];
  watch(page, problems, requests);
  const resp = await page.goto(`${base}/ui/#token=${encodeURIComponent(token)}`, { waitUntil: 'load' });
  const h = resp.headers();
  check(resp.status() === 200, '/ui/ answers 200', resp.status());
  check(h['content-security-policy'].startsWith("default-src 'none'; script-src 'self'"), 'the page has the strict CSP', h['content-security-policy']);
  check(h['x-frame-options'] === 'DENY' && h['x-content-type-options'] === 'nosniff', 'no framing, no sniffing');
  await waitFor(page, `figures render (dead = ${scenario.dead})`, (n) => document.getElementById('fig-dead').textContent === String(n), scenario.dead);
  const figures = await page.evaluate(() => ['fig-due', 'fig-inflight', 'fig-dead', 'fig-oldest', 'fig-blocked'].map((id) => document.getElementById(id).textContent));
  console.log(`figures: due ${figures[0]}, in flight ${figures[1]}, dead ${figures[2]}, oldest due ${figures[3]}, blocked ${figures[4]}`);
  check(figures[0] === '0' && figures[1] === '0' && figures[3] === '0s' && figures[4] === '0', 'due, in flight, oldest age and blocked are shown', figures);
  const href = await page.evaluate(() => location.href);
  check(!href.includes('token') && !href.includes(token), 'the token left the address bar', href);
  check(await page.evaluate(() => sessionStorage.getItem('webhook-relay.admin-token')) === token, 'the token is kept in session storage');
  await waitFor(page, `the dead letters are listed (${scenario.ids.join(', ')})`, hasRows, scenario.ids);
  // Newest first by default; oldest first is the same rows reversed.
  const newest = await rowIds(page);
  await page.selectOption('#order', 'oldest');
  await waitFor(page, 'oldest first lists the rows reversed', (want) => {
    const ids = [...document.querySelectorAll('#dead-rows tr')].map((r) => r.dataset.id);
    return ids.join(',') === want.join(',');
  }, [...newest].reverse());
  console.log(`order: newest first ${newest.join(',')}; oldest first reverses it`);
  await page.selectOption('#order', 'newest');
  await waitFor(page, 'newest first again', (want) => {
    const ids = [...document.querySelectorAll('#dead-rows tr')].map((r) => r.dataset.id);
    return ids.join(',') === want.join(',');
  }, newest);
  const row = page.locator(`#dead-rows tr[data-id="${scenario.show}"]`);
  const cells = await row.locator('td').allInnerTexts();
  check(cells[3] === String(scenario.showStatus) && cells[4].length > 0, `row ${scenario.show} shows its last status and error`, cells);
  const apiCalls = requests.filter((r) => new URL(r.url).pathname.startsWith('/v1/'));
  check(apiCalls.length > 0 && apiCalls.every((r) => r.auth === `Bearer ${token}`), 'every API call carries the bearer token');

  // --- one event: payload, then replay and delete inside the page ---
  await row.click();
  await waitFor(page, `the detail of ${scenario.show} opens`, (id) => document.getElementById('detail-id').textContent === id && !document.getElementById('detail').hidden, scenario.show);
  const payload = await text(page, '#payload');
  check(payload.includes(scenario.showText), `its payload is shown (${scenario.showText})`, payload);
  const fields = await text(page, '#detail-fields');
  check(fields.includes('Attempts') && fields.includes('Last error'), 'its attempts and last outcome are shown', fields);
  await page.screenshot({ path: join(shots, 'console-event.png'), fullPage: true });

  await page.locator(`#dead-rows tr[data-id="${scenario.replay}"]`).click();
  await waitFor(page, `the detail of ${scenario.replay} opens`, (id) => document.getElementById('detail-id').textContent === id, scenario.replay);
  await page.click('#replay-one');
  check(await page.locator('#confirm').isVisible(), 'replay asks to confirm in the page');
  await page.click('#confirm-yes');
  await waitFor(page, `the page says ${scenario.replay} was replayed`, (id) => document.getElementById('action-result').textContent.startsWith(`Replayed ${id} (was dead)`), scenario.replay);
  await waitFor(page, `${scenario.replay} left the dead letters`, lacksRow, scenario.replay);

  await page.locator(`#dead-rows tr[data-id="${scenario.remove}"]`).click();
  await waitFor(page, `the detail of ${scenario.remove} opens`, (id) => document.getElementById('detail-id').textContent === id, scenario.remove);
  await page.click('#delete-one');
  await page.click('#confirm-no');
  check(await page.locator('#confirm').isHidden(), 'cancel keeps the event');
  await page.click('#delete-one');
  await page.click('#confirm-yes');
  await waitFor(page, `the page says ${scenario.remove} was deleted`, (id) => document.getElementById('action-result').textContent === `Deleted ${id}.`, scenario.remove);
  await waitFor(page, `${scenario.remove} left the dead letters`, lacksRow, scenario.remove);

  // The overview once the chart has a few samples (7 dead, then 5).
  await waitFor(page, 'the chart has five samples', () => Number(document.getElementById('chart').dataset.samples) >= 5);
  check(await page.locator('#chart polyline').count() === 3, 'the chart draws due, in flight and dead');
  await page.screenshot({ path: join(shots, 'console-overview.png'), fullPage: true });

  // --- a filtered replay, counted first ---
  await page.fill('#bulk-status', scenario.filter.status);
  await page.fill('#bulk-since', localInput(Date.now() - 3600_000));
  check(await page.locator('#bulk-replay').isDisabled(), 'no replay before a count');
  await page.click('#bulk-count');
  await waitFor(page, 'the dry run counts', () => document.getElementById('bulk-result').dataset.matched !== undefined);
  const counted = await text(page, '#bulk-result');
  console.log(`dry run: ${counted}`);
  check(counted.startsWith(`${scenario.filterCount} dead letter(s) match last status ${scenario.filter.status}`), `the dry run counts ${scenario.filterCount}`, counted);
  check(await text(page, '#bulk-replay') === `Replay ${scenario.filterCount}`, `the button offers to replay ${scenario.filterCount}`);
  await page.locator('#bulk').scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, 'console-replay-dry-run.png'), fullPage: true });
  await page.click('#bulk-replay');
  await waitFor(page, `the page says ${scenario.filterCount} were replayed`, (n) => document.getElementById('bulk-result').textContent.startsWith(`Replayed ${n} dead letter(s)`), scenario.filterCount);
  const left = scenario.dead - 2 - scenario.filterCount;
  await waitFor(page, `${left} dead letters are left`, (n) => document.getElementById('fig-dead').textContent === String(n) && document.querySelectorAll('#dead-rows tr').length === n, left);
  const violations = await page.evaluate(() => window.__cspViolations);
  check(violations.length === 0, 'no CSP violation was reported', violations);
  await context.close();

  // --- a wrong token: a message, no data ---
  const wrong = await browser.newContext({ viewport: { width: 1360, height: 700 } });
  await cspListener(wrong);
  const bad = await wrong.newPage();
  bad.setDefaultTimeout(STEP_MS);
  const badRequests = [];
  watch(bad, problems, badRequests);
  const badResponses = [];
  bad.on('response', (r) => {
    if (new URL(r.url()).pathname.startsWith('/v1/')) badResponses.push(r.status());
  });
  await bad.goto(`${base}/ui/#token=not-the-token`, { waitUntil: 'load' });
  await waitFor(bad, 'a wrong token is refused with a message', () => {
    const m = document.getElementById('message');
    return !m.hidden && m.textContent.includes('refused this token');
  });
  console.log(`wrong token: ${await text(bad, '#message')}`);
  check(await bad.locator('#dead-rows tr').count() === 0, 'no dead-letter rows with a wrong token');
  check(await bad.locator('#console').isHidden(), 'the console is hidden with a wrong token');
  check(await bad.evaluate(() => document.getElementById('fig-dead').textContent) === '\u2014', 'no figures with a wrong token');
  check(await bad.evaluate(() => sessionStorage.getItem('webhook-relay.admin-token')) === null, 'the refused token is not kept');
  check(badResponses.length > 0 && badResponses.every((s) => s === 401), 'the API answered 401', badResponses);
  check(!(await bad.evaluate(() => location.href)).includes('not-the-token'), 'the wrong token left the address bar too');
  await bad.screenshot({ path: join(shots, 'console-wrong-token.png') });

  // --- the right token typed into the form ---
  await bad.fill('#token-input', token);
  await bad.click('#token-form button[type=submit]');
  await waitFor(bad, 'the token typed in the form opens the console', (n) => document.querySelectorAll('#dead-rows tr').length === n, left);
  check(await bad.locator('#message').isHidden(), 'the message is gone');
  const badViolations = await bad.evaluate(() => window.__cspViolations);
  check(badViolations.length === 0, 'no CSP violation was reported (second page)', badViolations);
  await wrong.close();

  check(problems.length === 0, 'no request left the admin origin, no CSP or page error', problems);
  console.log(`console test: all checks passed in ${((Date.now() - t0) / 1000).toFixed(1)}s; screenshots in ${shots}`);
}

let status = 0;
try {
  await main();
} catch (e) {
  console.log(`console test: FAILED: ${e.message}`);
  status = 1;
} finally {
  clearTimeout(watchdog);
  if (browser) await browser.close().catch(() => {});
}
process.exit(status);
