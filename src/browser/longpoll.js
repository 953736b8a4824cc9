/**
 * longpoll.js: a browser client for tower-longpoll servers (or any server
 * with the same wire contract). One ES module, no dependencies.
 *
 *   import { LongPoll } from '/longpoll.js';
 *
 *   const poll = new LongPoll('/poll/alice', { pauseWhenHidden: true });
 *   poll.addEventListener('event', e => {
 *     const { data, contentType, cursor, gap } = e.detail;
 *     if (gap) reloadEverything();          // some events were no longer kept
 *     show(contentType.startsWith('application/json') ? JSON.parse(data) : data);
 *   });
 *   poll.addEventListener('status', e => console.log(e.detail.state, e.detail));
 *   poll.addEventListener('error', e => console.error(e.detail.message));
 *   poll.start();                            // ... and poll.stop() to end
 *
 * new LongPoll(url, options)   url: the poll URL, relative to the page or
 *                              absolute (another origin, whose server answers
 *                              CORS for this page's); its query is kept; a
 *                              `since` in it is where to start when nothing is
 *                              stored.
 * options (all optional):
 *   id               what tabs share a poll by: the lock, channel and storage
 *                    key (default: the URL's path, which names the client id;
 *                    for another origin, that origin and the path)
 *   serverWait       seconds the server may hold a poll, sent as ?timeout=
 *                    (default: the server's own wait); keep it under the
 *                    timeout of any proxy in front of the server. (`timeout`,
 *                    its former name, is still read.)
 *   requestTimeout   ms before a poll's connection is taken for dead
 *                    (default: serverWait + 10 % + 15 s, or 120 s)
 *   credentials      fetch's credentials mode: 'same-origin' (the default) or
 *                    'include', to send cookies and HTTP auth to an API on
 *                    another origin (which must then allow credentials for
 *                    this page's origin), or 'omit'
 *   minBackoff       ms, first wait after a failure (default 250)
 *   maxBackoff       ms, the longest wait (default 30000)
 *   pauseWhenHidden  stop polling while the page is hidden (default false)
 *   shareAcrossTabs  one poll for all tabs of the origin (default true)
 *   headers          extra request headers, e.g. { Authorization: '...' }
 *   binary           deliver data as an ArrayBuffer, not text (default false)
 *   storage          where the cursor survives reloads (default
 *                    sessionStorage; null keeps it in memory only)
 *   replay           events the polling tab keeps to replay to a tab that
 *                    (re)joins behind (default 100)
 *
 * Events (EventTarget; each one's `detail`):
 *   'event'   { data, contentType, cursor, gap }: in order, each once per tab
 *   'status'  { state, leader, retryIn?, httpStatus?, reason? }, where state is
 *             'waiting' (a poll is out), 'retrying' (backing off for retryIn
 *             ms), 'following' (another tab polls for this one), 'paused'
 *             (hidden), 'stopped' or 'failed'; leader tells whether this tab
 *             holds the poll (a follower mirrors the leader's state with
 *             leader false)
 *   'error'   { httpStatus?, message }: a refusal that retrying cannot cure
 *             (400, 404, 405, ...); polling stops in every tab
 * Properties: cursor (last event's, or null), leader (this tab polls), state.
 *
 * What it does, as the Rust client does:
 * - keeps the cursor of the last event (its ETag) and sends it as ?since=, in
 *   sessionStorage, so a reload resumes where the page was;
 * - on 204 (keepalive) polls again at once;
 * - on 408 (a timeout layer or proxy in front of the server cut the poll
 *   short) polls again at once too, but once two in a row came back within a
 *   second, no more often than once a second;
 * - on network errors, timeouts, 429 and 5xx waits a jittered,
 *   doubling delay (upper half of min * 2^n, capped at max), never less than
 *   the server's Retry-After (seconds or a date; at most an hour);
 * - shares one poll between the tabs of an origin: the tab that holds the
 *   Web Lock named after `id` polls and fans events out on a BroadcastChannel;
 *   the others wait for the lock, and one takes over, from its own cursor,
 *   when the polling tab closes. Without Web Locks (an insecure context) each
 *   tab polls on its own.
 * - with pauseWhenHidden, a hidden tab gives up the lock (another, visible
 *   tab takes over) and polls nothing until it is shown again.
 */

const MAX_RETRY_AFTER_MS = 3600 * 1000;
/** Polls cut short by 408 start at most this often once two in a row came
 * back sooner: a proxy that answers 408 at once must not make a hot loop. */
const CUT_FLOOR_MS = 1000;
const SEEN_CURSORS = 512;

export class LongPoll extends EventTarget {
  #url; #options; #name; #storageKey; #tabId;
  #cursor = null;
  #state = 'stopped';
  #leader = false;
  #running = false;
  #channel = null;
  #turn = null;        // AbortController of this tab's bid for the lock and of its polling
  #recent = [];        // events kept to replay, oldest first
  #seenOrder = [];
  #seen = new Set();
  #onVisibility = () => this.#visibilityChanged();

  constructor(url, options = {}) {
    super();
    this.#url = new URL(url, location.href);
    this.#options = {
      serverWait: options.timeout ?? null, requestTimeout: null, minBackoff: 250, maxBackoff: 30000,
      pauseWhenHidden: false, shareAcrossTabs: true, headers: {}, binary: false,
      credentials: 'same-origin', storage: globalThis.sessionStorage ?? null, replay: 100, ...options,
    };
    const crossOrigin = this.#url.origin !== location.origin;
    const id = this.#options.id ?? (crossOrigin ? this.#url.origin + this.#url.pathname : this.#url.pathname);
    this.#name = 'longpoll:' + id;
    this.#storageKey = 'longpoll:cursor:' + id;
    this.#tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
    const stored = this.#load();
    const given = this.#url.searchParams.get('since');
    this.#cursor = stored || given || null;
    this.#url.searchParams.delete('since');
    if (this.#options.serverWait != null) this.#url.searchParams.set('timeout', String(this.#options.serverWait));
  }

  /** The cursor of the last event, or null. */
  get cursor() { return this.#cursor; }
  /** Whether this tab holds the poll. */
  get leader() { return this.#leader; }
  /** The last status's state. */
  get state() { return this.#state; }

  /** Starts polling (or following the tab that polls). */
  start() {
    if (this.#running) return this;
    this.#running = true;
    if (this.#options.shareAcrossTabs && typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(this.#name);
      this.#channel.onmessage = message => this.#received(message.data);
    }
    if (this.#options.pauseWhenHidden) document.addEventListener('visibilitychange', this.#onVisibility);
    this.#join();
    return this;
  }

  /** Stops polling in this tab; another tab, if any, takes over. */
  stop() {
    if (!this.#running) return this;
    this.#running = false;
    this.#turn?.abort();
    this.#turn = null;
    this.#channel?.close();
    this.#channel = null;
    document.removeEventListener('visibilitychange', this.#onVisibility);
    this.#status({ state: 'stopped' });
    return this;
  }

  #join() {
    if (!this.#running || this.#turn) return;
    if (this.#options.pauseWhenHidden && document.hidden) {
      this.#status({ state: 'paused' });
      return;
    }
    const turn = this.#turn = new AbortController();
    if (this.#channel && globalThis.navigator?.locks) {
      this.#status({ state: 'following' });
      // The polling tab replays what it kept after our cursor: events that
      // came while this page was loading.
      this.#post({ type: 'hello', from: this.#tabId, since: this.#cursor });
      navigator.locks
        .request(this.#name, { signal: turn.signal }, () => this.#lead(turn.signal))
        .catch(err => { if (err?.name !== 'AbortError') this.#fatal(undefined, String(err)); });
    } else {
      this.#lead(turn.signal);
    }
  }

  #visibilityChanged() {
    if (!this.#running) return;
    if (document.hidden) {
      this.#turn?.abort();
      this.#turn = null;
      this.#status({ state: 'paused' });
    } else {
      this.#join();
    }
  }

  /** Polls until `signal` aborts; while it runs, this tab holds the lock. */
  async #lead(signal) {
    this.#leader = true;
    let failures = 0;
    let quickCuts = 0; // 408s in a row that came back within CUT_FLOOR_MS
    try {
      while (!signal.aborted) {
        this.#status({ state: 'waiting' });
        const outcome = await this.#pollOnce(signal);
        if (signal.aborted) break;
        if (outcome.event) {
          failures = 0;
          quickCuts = 0;
          this.#deliver(outcome.event, true);
        } else if (outcome.keepalive) {
          failures = 0;
          quickCuts = 0;
          if (this.#cursor === null && outcome.position) this.#setCursor(outcome.position);
        } else if (outcome.cut) {
          // Not the server's failure: something in front of it ended the
          // poll sooner than the server would have. Poll again now.
          failures = 0;
          if (this.#cursor === null && outcome.position) this.#setCursor(outcome.position);
          quickCuts = outcome.held < CUT_FLOOR_MS ? quickCuts + 1 : 0;
          if (quickCuts > 1) await sleep(CUT_FLOOR_MS - outcome.held, signal);
        } else if (outcome.retry) {
          quickCuts = 0;
          failures += 1;
          const wait = Math.max(backoff(failures, this.#options), outcome.retryAfter ?? 0);
          this.#status({ state: 'retrying', retryIn: Math.round(wait), httpStatus: outcome.httpStatus, reason: outcome.reason });
          await sleep(wait, signal);
        } else {
          this.#fatal(outcome.httpStatus, outcome.reason);
          break;
        }
      }
    } finally {
      this.#leader = false;
    }
  }

  async #pollOnce(signal) {
    const url = new URL(this.#url);
    if (this.#cursor) url.searchParams.set('since', this.#cursor);
    const options = this.#options;
    const limit = options.requestTimeout
      ?? (options.serverWait != null ? options.serverWait * 1100 + 15000 : 120000);
    const request = new AbortController();
    const abort = () => request.abort();
    signal.addEventListener('abort', abort);
    const timer = setTimeout(abort, limit);
    const started = Date.now();
    try {
      const response = await fetch(url, {
        cache: 'no-store', credentials: options.credentials, headers: options.headers, signal: request.signal,
      });
      const status = response.status;
      if (status === 200) {
        const cursor = etagCursor(response.headers);
        if (!cursor) {
          const reason = url.origin === location.origin
            ? 'an event without an ETag: not a long-poll server'
            : 'an event without an ETag this page may read: the server must expose ETag to it (Access-Control-Expose-Headers)';
          return { httpStatus: status, reason };
        }
        const data = options.binary ? await response.arrayBuffer() : await response.text();
        return {
          event: {
            data, cursor,
            contentType: response.headers.get('Content-Type') || '',
            gap: (response.headers.get('Longpoll-Gap') || '').toLowerCase() === 'true',
          },
        };
      }
      if (status === 204) return { keepalive: true, position: etagCursor(response.headers) };
      const text = (await response.text().catch(() => '')).trim().slice(0, 300);
      if (status === 408) return { cut: true, held: Date.now() - started, position: etagCursor(response.headers) };
      if (status === 429 || status >= 500) {
        return { retry: true, httpStatus: status, reason: text || `HTTP ${status}`, retryAfter: retryAfter(response.headers) };
      }
      return { httpStatus: status, reason: text || `HTTP ${status}` };
    } catch (err) {
      const reason = request.signal.aborted && !signal.aborted ? `no answer in ${limit} ms` : String(err?.message ?? err);
      return { retry: true, reason };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', abort);
    }
  }

  /** Hands an event to this tab once; the polling tab also fans it out. */
  #deliver(event, polled) {
    if (this.#seen.has(event.cursor)) return;
    this.#seen.add(event.cursor);
    this.#seenOrder.push(event.cursor);
    if (this.#seenOrder.length > SEEN_CURSORS) this.#seen.delete(this.#seenOrder.shift());
    this.#setCursor(event.cursor);
    this.#recent.push(event);
    if (this.#recent.length > this.#options.replay) this.#recent.shift();
    if (polled) this.#post({ type: 'event', event });
    this.dispatchEvent(new CustomEvent('event', { detail: event }));
  }

  #received(message) {
    if (!message || typeof message !== 'object') return;
    switch (message.type) {
      case 'event':
        if (!this.#leader) this.#deliver(message.event, false);
        break;
      case 'replay':
        if (!this.#leader && message.to === this.#tabId) message.events.forEach(e => this.#deliver(e, false));
        break;
      case 'hello': {
        if (!this.#leader || !message.since) break;
        const at = this.#recent.findIndex(e => e.cursor === message.since);
        if (at >= 0 && at + 1 < this.#recent.length) {
          this.#post({ type: 'replay', to: message.from, events: this.#recent.slice(at + 1) });
        }
        break;
      }
      case 'status':
        if (!this.#leader) this.#dispatchStatus({ ...message.status, leader: false });
        break;
      case 'error':
        if (!this.#leader) this.#fatal(message.httpStatus, message.message, false);
        break;
    }
  }

  #status(detail) {
    detail = { ...detail, leader: this.#leader };
    if (this.#leader) this.#post({ type: 'status', status: detail });
    this.#dispatchStatus(detail);
  }

  #dispatchStatus(detail) {
    this.#state = detail.state;
    this.dispatchEvent(new CustomEvent('status', { detail }));
  }

  #fatal(httpStatus, message, tell = true) {
    if (tell) this.#post({ type: 'error', httpStatus, message });
    this.#status({ state: 'failed', httpStatus, reason: message });
    this.dispatchEvent(new CustomEvent('error', { detail: { httpStatus, message } }));
    this.stop();
    this.#state = 'failed';
  }

  #post(message) {
    try { this.#channel?.postMessage(message); } catch { /* closed: nobody to tell */ }
  }

  #setCursor(cursor) {
    this.#cursor = cursor;
    try { this.#options.storage?.setItem(this.#storageKey, cursor); } catch { /* quota or privacy mode */ }
  }

  #load() {
    try { return this.#options.storage?.getItem(this.#storageKey) || null; } catch { return null; }
  }
}

/** The upper half of min * 2^(failures-1), capped at max: spread, yet growing. */
export function backoff(failures, { minBackoff = 250, maxBackoff = 30000 } = {}) {
  const ceiling = Math.min(maxBackoff, minBackoff * 2 ** Math.max(0, failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Retry-After in ms (delay-seconds or an HTTP date), at most an hour, or null. */
export function retryAfter(headers) {
  const value = (headers.get('Retry-After') || '').trim();
  if (!value) return null;
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isNaN(ms) ? null : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

function etagCursor(headers) {
  const match = /^(?:W\/)?"([^"]+)"$/.exec((headers.get('ETag') || '').trim());
  return match ? match[1] : null;
}

function sleep(ms, signal) {
  return new Promise(resolve => {
    if (signal.aborted) return resolve();
    const done = () => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve(); };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
