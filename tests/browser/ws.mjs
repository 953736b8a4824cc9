// Drives Debian's chromium (through playwright-core): a page's WebSocket
// talks through longpoll-gateway (WebSocket-over-HTTP) to the gripcontrol
// backend of longpoll-gateway/tests/interop/ws_backend.py, for
// longpoll-gateway/tests/browser_ws.rs, which starts both.
//
//   node ws.mjs <gateway ws url> <gateway publish url> <publish token>
//
// The page sends "hi" and gets the backend's echo, gets a ws-message
// published to the socket's channel through the gateway's publish API, then
// asks the backend to close and sees close code 4000. Prints `E2E ok`.

import fs from 'node:fs';
import { check, eventually, launch } from './chromium.mjs';

const [wsUrl, publishBase, token] = process.argv.slice(2);
if (!wsUrl || !publishBase || !token) {
  console.error('usage: node ws.mjs <gateway ws url> <gateway publish url> <publish token>');
  process.exit(2);
}
const log = (...args) => console.error('[ws]', ...args);

const { context, profile } = await launch('ws');
const watchdog = setTimeout(async () => {
  console.error('[ws] took over 2 minutes: giving up');
  await context.close().catch(() => {});
  process.exit(1);
}, 120_000);

const state = page => page.evaluate(() => ({ messages: window.messages, closed: window.closeCode, ready: window.socket && window.socket.readyState }));

try {
  const page = await context.newPage();
  page.on('pageerror', err => log(`page error: ${err.message}`));
  // A page of the gateway's origin (the backend answers it 501; any page will do).
  await page.goto(wsUrl.replace(/^ws/, 'http') + '/');
  await page.evaluate(url => {
    window.messages = [];
    window.closeCode = null;
    window.socket = new WebSocket(url);
    window.socket.onmessage = event => window.messages.push(event.data);
    window.socket.onclose = event => { window.closeCode = event.code; };
    window.socket.onopen = () => window.socket.send('hi');
  }, `${wsUrl}/chat`);
  await eventually('the echo', async () => (await state(page)).messages.length >= 1)
    .catch(async err => { log(`state: ${JSON.stringify(await state(page))}`); throw err; });
  const echo = (await state(page)).messages[0];
  check(echo.startsWith('echo:hi user=alice id='), `the echo is ${echo}`);

  const published = await fetch(`${publishBase}/publish/`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ items: [{ channel: 'room', formats: { 'ws-message': { content: 'to the browser' } } }] }),
  });
  check(published.status === 200, `the publish answered ${published.status}`);
  await eventually('the publish', async () => (await state(page)).messages.length >= 2);
  check((await state(page)).messages[1] === 'to the browser', `got ${JSON.stringify((await state(page)).messages)}`);

  await page.evaluate(() => window.socket.send('close'));
  await eventually('the close', async () => (await state(page)).closed !== null);
  check((await state(page)).closed === 4000, `closed with ${(await state(page)).closed}`);
  log('echo, a publish and the backend\'s close code in chromium');
  process.stdout.write('E2E ok\n');
} catch (err) {
  console.error(`[ws] FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
