// What the browser scripts share: Debian's chromium through playwright-core,
// headless, in a profile of its own, and polling for a condition.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const check = (condition, message) => { if (!condition) throw new Error(message); };

// Calls `probe` every 25 ms until it returns something truthy (which it
// returns), for at most `wait` ms.
export async function eventually(what, probe, wait = 20_000) {
  const deadline = Date.now() + wait;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for: ${what}`);
    await new Promise(resolve => setTimeout(resolve, 25));
  }
}

// A persistent context in a fresh profile (`profile` is its folder, to
// remove afterwards); `options` are added to playwright's.
export async function launch(name, options = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), `longpoll-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ...options,
  });
  return { context, profile };
}
