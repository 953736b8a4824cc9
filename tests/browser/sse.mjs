// Drives Debian's chromium (through playwright-core) against a page whose
// EventSource reads Server-Sent Events from django-eventstream through
// longpoll-gateway, for longpoll-gateway/tests/browser_sse.rs, which starts
// the Django app and the gateway.
//
//   node sse.mjs <gateway url> <gateway publish url> <publish token>
//
// It sends events with the app's /send, ends the stream from the gateway's
// publish API (the browser reconnects with Last-Event-ID), sends more while
// it reconnects, and checks that the page got every event once, in order.
// It prints `E2E ok` at the end; any failure exits non-zero with the reason.

import fs from 'node:fs';
import { check, eventually, launch } from './chromium.mjs';

const [base, publishBase, token] = process.argv.slice(2);
if (!base || !publishBase || !token) {
  console.error('usage: node sse.mjs <gateway url> <gateway publish url> <publish token>');
  process.exit(2);
}
const log = (...args) => console.error('[sse]', ...args);

async function send(n) {
  const reply = await fetch(`${base}/send?n=${n}`);
  check(reply.status === 200, `/send?n=${n} answered ${reply.status}`);
}

async function metric(name) {
  const text = await (await fetch(`${publishBase}/metrics`)).text();
  const line = text.split('\n').find(l => l.startsWith(name + ' '));
  check(line, `no ${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

const { context, profile } = await launch('sse');
const watchdog = setTimeout(async () => {
  console.error('[sse] took over 2 minutes: giving up');
  await context.close().catch(() => {});
  process.exit(1);
}, 120_000);

const received = page => page.evaluate(() => window.received);
async function got(page, count) {
  await eventually(`the page to get ${count} events`, async () => (await received(page)).length >= count);
  const events = await received(page);
  check(events.length === count, `the page got too many events: ${JSON.stringify(events)}`);
  events.forEach((event, index) => {
    check(event.n === index + 1 && event.id === `test:${index + 1}`,
      `event ${index + 1} is ${JSON.stringify(event)}; all: ${JSON.stringify(events)}`);
  });
}

try {
  const page = await context.newPage();
  page.on('pageerror', err => log(`page error: ${err.message}`));
  await page.goto(`${base}/`);
  await eventually('the stream to open', async () => (await page.evaluate(() => window.opened)) === 1);

  await send(1);
  await send(2);
  await got(page, 2);

  // The stream ends; the browser comes back with Last-Event-ID: test:2
  // while two more events are sent.
  const ended = await fetch(`${publishBase}/publish/`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ items: [{ channel: 'events-test', formats: { 'http-stream': { action: 'close' } } }] }),
  });
  check(ended.status === 200, `the close answered ${ended.status}`);
  await send(3);
  await send(4);
  await eventually('the stream to open again', async () => (await page.evaluate(() => window.opened)) === 2);
  await got(page, 4);
  await send(5);
  await got(page, 5);
  check(await metric('longpoll_gateway_grip_streams_total') === 2, 'the page did not reconnect exactly once');
  log('5 events, each once and in order, across a reconnect');
  say('ok');
} catch (err) {
  console.error(`[sse] FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}

function say(line) {
  process.stdout.write(`E2E ${line}\n`);
}
