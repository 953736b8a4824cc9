// longpoll.js under node (no browser needed: the part under test is the
// polling loop), for tests/browser.rs: it polls a server whose timeout layer
// cuts every poll short with 408, and must poll again at once rather than
// back off (its backoff is set to 20 s, so any backoff shows).
//
//   node cut.mjs <base url> <client id>
//
// It prints `E2E polling` once started, `E2E event <json>` when the event
// arrives; it exits non-zero if it ever backs off or fails.

const [base, client] = process.argv.slice(2);
if (!base || !client) {
  console.error('usage: node cut.mjs <base url> <client id>');
  process.exit(2);
}
// The module resolves relative URLs against the page's location.
globalThis.location = new URL('/', base);
const { LongPoll } = await import(new URL('../../src/browser/longpoll.js', import.meta.url));

const poll = new LongPoll(`${base}/poll/${encodeURIComponent(client)}`, {
  shareAcrossTabs: false, storage: null, minBackoff: 20000, maxBackoff: 40000,
});
poll.addEventListener('status', ({ detail }) => {
  if (detail.state === 'retrying') {
    console.error(`[cut] backed off for ${detail.retryIn} ms after ${detail.httpStatus ?? detail.reason}`);
    process.exit(1);
  }
});
poll.addEventListener('error', ({ detail }) => {
  console.error(`[cut] failed: ${detail.message}`);
  process.exit(1);
});
poll.addEventListener('event', ({ detail }) => {
  process.stdout.write(`E2E event ${JSON.stringify(detail)}\n`);
  process.exit(0);
});
poll.start();
process.stdout.write('E2E polling\n');
setTimeout(() => {
  console.error('[cut] no event in 60 s');
  process.exit(1);
}, 60_000);
