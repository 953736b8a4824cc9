// Drives Debian's chromium (through playwright-core) against the demo page,
// for tests/browser.rs, which starts and restarts the server.
//
//   node e2e.mjs <base url> <client id> <mode: demo|keep> [screenshot.png]
//   node e2e.mjs <page base url> <client id> cors <api base url>
//
// demo and keep: two tabs of one id on the demo page. cors: the demo page
// served on one origin polls and publishes on the API of another (the
// page's ?api=), with credentials (a cookie of the API's origin).
//
// It talks to the Rust test over stdio: it prints `E2E restart` when the
// server may be restarted (the API, in cors mode: twice), then reads one
// line `go <json>`, where <json> is
// {"expect": [texts published around the restart, oldest first],
//  "gap": whether the first of them must be marked as a gap}.
// It prints `E2E ok` at the end; any failure exits non-zero with the reason.

import fs from 'node:fs';
import readline from 'node:readline';
import { check, eventually, launch } from './chromium.mjs';

const [base, client, mode, extra] = process.argv.slice(2);
if (!base || !client || !['demo', 'keep', 'cors'].includes(mode) || (mode === 'cors' && !extra)) {
  console.error('usage: node e2e.mjs <base url> <client id> <demo|keep> [screenshot.png]\n' +
    '       node e2e.mjs <page base url> <client id> cors <api base url>');
  process.exit(2);
}
const screenshot = mode === 'cors' ? undefined : extra;
// Where the polls go: the page's own origin, or the API's in cors mode.
const api = mode === 'cors' ? extra : base;
const log = (...args) => console.error('[e2e]', ...args);
const say = line => process.stdout.write(`E2E ${line}\n`);

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function readLine() {
  const { value, done } = await lines.next();
  check(!done, 'the test closed stdin');
  return value;
}

async function metric(name) {
  const text = await (await fetch(`${api}/metrics`)).text();
  const line = text.split('\n').find(l => l.startsWith(name + ' '));
  check(line, `no ${name} in /metrics`);
  return Number(line.split(' ')[1]);
}


// The events a tab shows, oldest first (the page puts the newest on top).
const shown = page => page.$$eval('#events li', items => items.reverse().map(li => ({
  text: li.firstChild.textContent.replace('  (some earlier events were no longer kept)', ''),
  gap: li.classList.contains('gap'),
})));

async function shows(page, name, texts) {
  await eventually(`${name} to show ${JSON.stringify(texts)}`, async () => {
    const have = (await shown(page)).map(e => e.text);
    return texts.every(t => have.includes(t));
  });
  const have = (await shown(page)).map(e => e.text);
  const at = texts.map(t => have.indexOf(t));
  check(at.every((i, n) => n === 0 || i > at[n - 1]), `${name} shows them out of order: ${JSON.stringify(have)}`);
  check(new Set(have).size === have.length, `${name} shows an event twice: ${JSON.stringify(have)}`);
}

const statusText = page => page.$eval('#status', el => el.textContent);
const isLeader = page => page.evaluate(() => window.longpoll.leader);

const { context, profile } = await launch('e2e', { viewport: { width: 900, height: 620 } });
const watchdog = setTimeout(async () => {
  console.error('[e2e] took over 3 minutes: giving up');
  await context.close().catch(() => {});
  process.exit(1);
}, 180_000);

const polls = new Map(); // page -> poll requests it sent
const pollLog = new Map(); // page -> [{ at, sent } | { at, status, retryAfter }]
const pollRequests = []; // every poll request, for its headers
const isPoll = url => new URL(url).pathname.startsWith('/poll/');
async function open(name, query = '') {
  const page = await context.newPage();
  polls.set(page, 0);
  pollLog.set(page, []);
  page.on('request', request => {
    if (!isPoll(request.url())) return;
    polls.set(page, polls.get(page) + 1);
    pollLog.get(page).push({ at: Date.now(), sent: true });
    pollRequests.push(request);
  });
  page.on('response', response => {
    if (!isPoll(response.url())) return;
    pollLog.get(page).push({ at: Date.now(), status: response.status(), retryAfter: response.headers()['retry-after'] });
  });
  page.on('pageerror', err => log(`${name}: page error: ${err.message}`));
  page.on('console', message => { if (message.type() === 'error') log(`${name}: console: ${message.text()}`); });
  await page.goto(`${base}/?client=${encodeURIComponent(client)}${query}`);
  return page;
}

// After a restart: each page shows what was published around it, in order,
// the first marked as a gap or not, as the test says.
async function afterRestart(pages, before) {
  const go = await readLine();
  check(go.startsWith('go '), `unexpected line ${go}`);
  const { expect, gap } = JSON.parse(go.slice(3));
  for (const [page, name] of pages) {
    await shows(page, name, [...before, ...expect]);
    const events = await shown(page);
    const marked = events.find(e => e.text === expect[0]).gap;
    check(marked === gap, `${name}: the first event after the restart is ${marked ? '' : 'not '}marked as a gap`);
    check(events.filter(e => e.gap).length === (gap ? 1 : 0) + before.gaps, `${name}: unexpected gap marks ${JSON.stringify(events)}`);
  }
  return expect;
}

// The shutdown's 503 came with Retry-After, which the page read (the header
// is exposed to it across origins): it polled no sooner, and said so.
async function waitedRetryAfter(page, name) {
  const entries = pollLog.get(page);
  const refused = entries.findLastIndex(entry => entry.status === 503);
  check(refused >= 0, `${name} saw no 503: ${JSON.stringify(entries)}`);
  const retryAfter = Number(entries[refused].retryAfter);
  check(retryAfter >= 1, `the 503 had Retry-After ${entries[refused].retryAfter}`);
  const retried = entries.slice(refused).find(entry => entry.sent);
  check(retried, `${name} never polled after the 503`);
  const waited = retried.at - entries[refused].at;
  // Less a margin for the time the 503 takes to reach the page's fetch.
  check(waited >= retryAfter * 1000 - 100, `${name} polled ${waited} ms after a 503 with Retry-After: ${retryAfter}`);
  entries.length = 0;
  return { retryAfter, waited };
}

async function crossOrigin() {
  // A cookie of the API's origin: sent only because the page asks for
  // credentials, and the API allows them for the page's origin.
  await context.addCookies([{ name: 'lp_session', value: 'e2e', url: api }]);
  const page = await open('the page', `&api=${encodeURIComponent(api)}&credentials=include`);
  check(new URL(api).origin !== new URL(page.url()).origin, 'the page and the API share an origin');
  await eventually('the page to poll', async () => (await statusText(page)).includes('this tab polls'));
  await eventually('its poll to park on the API', async () => (await metric('longpoll_waiters')) === 1);
  const headers = await pollRequests[0].allHeaders();
  check(headers.origin === new URL(base).origin, `the poll went without the page's Origin: ${JSON.stringify(headers)}`);
  check((headers.cookie || '').includes('lp_session=e2e'), `the poll went without the API's cookie: ${JSON.stringify(headers)}`);

  // Publishing from the page's form goes to the API too; the event arrives.
  await page.fill('input[name=data]', 'hello across origins');
  await page.click('button[type=submit]');
  await shows(page, 'the page', ['hello across origins']);
  const cursor = await page.evaluate(() => window.longpoll.cursor);
  check(cursor, 'the page has no cursor');

  // A poll with a header of its own needs a preflight: answered, and the
  // answer's ETag can be read.
  const probe = await page.evaluate(async ({ api, client, cursor }) => {
    const response = await fetch(`${api}/poll/${encodeURIComponent(client)}?timeout=0`, {
      headers: { 'Last-Event-ID': cursor }, cache: 'no-store', credentials: 'include',
    });
    return { status: response.status, etag: response.headers.get('ETag') };
  }, { api, client, cursor });
  check(probe.status === 204 && probe.etag === `"${cursor}"`, `the preflighted poll: ${JSON.stringify(probe)}`);

  // The API restarts on a store that outlives it: the page resumes from its
  // cursor and gets what was published meanwhile, no gap.
  say('restart');
  const before = ['hello across origins'];
  before.gaps = 0;
  const kept = await afterRestart([[page, 'the page']], before);
  const first = await waitedRetryAfter(page, 'the page');
  log(`the page waited ${first.waited} ms after a 503 with Retry-After: ${first.retryAfter}`);

  // The API restarts on a new store: the page's cursor is from a log that
  // is gone, and the next event says so with Longpoll-Gap, which it reads.
  await eventually('the page to poll again', async () => (await statusText(page)).startsWith('waiting'));
  say('restart');
  before.push(...kept);
  await afterRestart([[page, 'the page']], before);
  await eventually('the page to poll after the second restart', async () => (await statusText(page)).startsWith('waiting'));
  const gets = pollRequests.filter(request => request.method() === 'GET');
  const cookies = await Promise.all(gets.map(request => request.allHeaders()));
  check(cookies.every(h => (h.cookie || '').includes('lp_session=e2e')), 'a poll went without the cookie');
  log(`${gets.length} polls across origins, each with the API's cookie`);
}

try {
  if (mode === 'cors') {
    await crossOrigin();
    say('ok');
  } else {
    // Two tabs of one id: the first polls, the second follows it.
    const first = await open('tab 1');
    await eventually('tab 1 to lead', async () => await isLeader(first) && (await statusText(first)).includes('this tab polls'));
    const second = await open('tab 2');
    await eventually('tab 2 to follow', async () => !(await isLeader(second)) && /following|another tab polls/.test(await statusText(second)));
    check(await isLeader(first), 'tab 1 lost the lead');

    // One poll in flight for both tabs: one parked on the server, none sent by tab 2.
    await eventually('one parked poll', async () => (await metric('longpoll_waiters')) === 1);
    check(polls.get(second) === 0, `the following tab sent ${polls.get(second)} polls`);
    log(`tab 1 sent ${polls.get(first)} poll(s), tab 2 none; longpoll_waiters = 1`);

    // Publish from the following tab's form: both tabs show it.
    await second.fill('input[name=data]', 'hello from tab 2');
    await second.click('button[type=submit]');
    await shows(first, 'tab 1', ['hello from tab 2']);
    await shows(second, 'tab 2', ['hello from tab 2']);
    await eventually('the poll to park again', async () => (await metric('longpoll_waiters')) === 1);
    check(polls.get(second) === 0, 'the following tab polled');

    // The server restarts.
    say('restart');
    const earlier = ['hello from tab 2'];
    earlier.gaps = 0;
    // Both tabs recover and show what was published meanwhile, in order.
    await afterRestart([[first, 'tab 1'], [second, 'tab 2']], earlier);
    await eventually('tab 1 to poll again', async () => (await statusText(first)).startsWith('waiting'));
    const { retryAfter, waited } = await waitedRetryAfter(first, 'tab 1');
    log(`tab 1 waited ${waited} ms after a 503 with Retry-After: ${retryAfter}`);
    await eventually('one parked poll after the restart', async () => (await metric('longpoll_waiters')) === 1);
    check(polls.get(second) === 0, 'the following tab polled during the restart');
    if (screenshot) {
      await first.screenshot({ path: screenshot });
      log(`screenshot: ${screenshot}`);
    }

    // The cursor survives a reload (sessionStorage).
    const before = await second.evaluate(() => window.longpoll.cursor);
    check(before, 'tab 2 has no cursor');
    await second.reload();
    await eventually('tab 2 to follow again', async () => /following|another tab polls/.test(await statusText(second)));
    check(await second.evaluate(() => window.longpoll.cursor) === before, 'the cursor did not survive the reload');

    // The polling tab closes: the other takes over, from its cursor.
    await first.close();
    await eventually('tab 2 to take over', () => isLeader(second));
    await eventually('tab 2 to poll', async () => (await statusText(second)).includes('this tab polls'));
    await eventually('one parked poll after the handover', async () => (await metric('longpoll_waiters')) === 1);
    const response = await fetch(`${base}/publish/${encodeURIComponent(client)}`, {
      method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'after the handover',
    });
    check(response.status === 202, `publish answered ${response.status}`);
    // The reloaded tab's list started empty; taking over from its cursor, it
    // gets the new event and nothing it had before.
    await shows(second, 'tab 2', ['after the handover']);
    const after = (await shown(second)).map(e => e.text);
    check(after.length === 1, `tab 2 shows more than the new event: ${JSON.stringify(after)}`);

    // pauseWhenHidden, on the module itself: a hidden page polls nothing, and
    // gets what came meanwhile once shown. (Headless pages are never hidden, so
    // the page's `document.hidden` is stood in for.)
    const solo = await context.newPage();
    await solo.goto(`${base}/metrics`);
    const parked = await metric('longpoll_waiters');
    const id = `${client}-pause`;
    const publishTo = async text => {
      const reply = await fetch(`${base}/publish/${id}`, { method: 'POST', body: text });
      check(reply.status === 202, `publish answered ${reply.status}`);
    };
    await solo.evaluate(async id => {
      window.hiddenNow = false;
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.hiddenNow });
      const { LongPoll } = await import('/longpoll.js');
      window.seen = [];
      window.solo = new LongPoll(`/poll/${id}`, { pauseWhenHidden: true });
      window.solo.addEventListener('event', e => window.seen.push(e.detail.data));
      window.solo.start();
    }, id);
    const seen = () => solo.evaluate(() => window.seen.join(','));
    await eventually('the pausable poll to park', async () => (await metric('longpoll_waiters')) === parked + 1);
    await publishTo('p1');
    await eventually('p1', async () => (await seen()) === 'p1');
    const setHidden = hidden => solo.evaluate(hidden => {
      window.hiddenNow = hidden;
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    await setHidden(true);
    await eventually('the hidden page to stop polling', async () => (await metric('longpoll_waiters')) === parked);
    check(await solo.evaluate(() => window.solo.state) === 'paused', 'the hidden page is not paused');
    await publishTo('p2');
    await publishTo('p3');
    check(await seen() === 'p1', 'a hidden page got events');
    await setHidden(false);
    await eventually('p2 and p3 once shown', async () => (await seen()) === 'p1,p2,p3');

    say('ok');
  }
} catch (err) {
  console.error(`[e2e] FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  lines.return?.();
  process.stdin.destroy();
}
