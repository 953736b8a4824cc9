//! The in-memory store: one bounded log per id, sharded maps, lazy expiry and a
//! background sweep.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::idempotency::Recent;
use super::{ReadFrom, ReadResult, Store, StoreError, StoreFuture, StoreStats};
use crate::cursor::Cursor;
use crate::event::{Event, StoredEvent};

const SHARDS: usize = 32;

/// What a log costs besides its events: the log itself, its map entry (key,
/// value and the hash table's control byte, rounded up) and its id's bytes
/// (see [`log_cost`]). Counted against `max_bytes`, so that a flood of tiny
/// events over many ids is bounded as surely as a few large ones.
const LOG_COST: usize = size_of::<Log>() + size_of::<Box<str>>() + 8;

/// What one slot of a log's queue costs, taken or free: the event's fixed
/// part. Its bytes (body, content type, headers) are added per event
/// (`Event::kept_size`).
const SLOT_COST: usize = size_of::<Kept>();

fn log_cost(id: &str) -> usize {
    LOG_COST + id.len()
}

/// Keeps every id's log in this process's memory: the default store of a
/// [`Hub`](crate::Hub).
///
/// Each id has a log of at most [`capacity`](MemoryStoreBuilder::capacity)
/// events, each kept for at most [`event_ttl`](MemoryStoreBuilder::event_ttl).
/// An id that has had no publish, no poll and no parked waiter for
/// [`id_idle_ttl`](MemoryStoreBuilder::id_idle_ttl) is forgotten with its log;
/// at most [`max_ids`](MemoryStoreBuilder::max_ids) ids are kept, the least
/// recently active idle ones making room for new ones; and all logs together
/// keep at most [`max_bytes`](MemoryStoreBuilder::max_bytes), counting each
/// event's and each log's fixed cost as well as the event bytes.
///
/// Every log gets a random epoch when it is created, so cursors from before a
/// restart, or from before the id was forgotten, are recognised as stale.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Sets the limits of a [`MemoryStore`].
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct MemoryStoreBuilder {
    config: Config,
}

#[derive(Clone, Debug)]
struct Config {
    capacity: usize,
    event_ttl: Duration,
    id_idle_ttl: Duration,
    max_ids: usize,
    max_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 64,
            event_ttl: Duration::from_secs(5 * 60),
            id_idle_ttl: Duration::from_secs(10 * 60),
            max_ids: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    config: Config,
    per_shard_ids: usize,
    ids: AtomicUsize,
    events: AtomicUsize,
    bytes: AtomicUsize,
    sweeper_started: AtomicBool,
    attached: AtomicBool,
    /// Idempotency keys of publishes, for 5 minutes.
    recent: Recent,
}

#[derive(Default)]
struct Shard {
    logs: HashMap<Box<str>, Log>,
    /// Waiters parked in this process per id: such ids are never forgotten.
    /// Kept apart from the logs so that a watch needs no log and cannot fail.
    watchers: HashMap<Box<str>, usize>,
}

struct Log {
    epoch: u64,
    /// The sequence number the next appended event gets; starts at 1.
    next_seq: u64,
    events: VecDeque<Kept>,
    /// The last sequence number committed as handed to a client.
    delivered: Option<u64>,
    last_active: Instant,
    /// The bytes counted for the log itself and its queue's slots, which
    /// stay allocated while the log lives.
    fixed_bytes: usize,
}

struct Kept {
    seq: u64,
    kept_at: Instant,
    event: Event,
}

impl MemoryStoreBuilder {
    /// The most events kept per id (default 64); the oldest goes first. At least 1.
    pub fn capacity(mut self, events: usize) -> Self {
        self.config.capacity = events.max(1);
        self
    }

    /// How long an event is kept (default 5 minutes).
    pub fn event_ttl(mut self, ttl: Duration) -> Self {
        self.config.event_ttl = ttl;
        self
    }

    /// How long an id with no activity and no parked waiter is kept (default
    /// 10 minutes). Keep it well above the longest poll timeout.
    pub fn id_idle_ttl(mut self, ttl: Duration) -> Self {
        self.config.id_idle_ttl = ttl;
        self
    }

    /// The most ids kept (default 1,000,000); beyond it, the least recently
    /// active idle ids are forgotten to make room.
    ///
    /// The cap is enforced per shard: each of the 32 shards keeps at most
    /// `max_ids / 32` ids, rounded up, so the total stays within `max_ids`
    /// plus 31, and a shard whose ids all have parked waiters refuses a new
    /// id ([`StoreError::TooManyIds`]) even when others have room.
    pub fn max_ids(mut self, ids: usize) -> Self {
        self.config.max_ids = ids.max(1);
        self
    }

    /// The most bytes kept over all ids (default 256 MiB); an append that
    /// would exceed it fails with [`StoreError::Full`].
    ///
    /// Counted: each event's body, content type and headers, each event's
    /// fixed cost in its log's queue (a slot, about 100 bytes, counted while
    /// the queue keeps it allocated), and each log's own (its map entry and
    /// id, about 150 bytes). So the budget holds for any mix, many ids of
    /// empty events as well as a few large ones. A log created by a poll on
    /// a new id is counted but never refused (ids are bounded by
    /// [`max_ids`](Self::max_ids)); its first append is.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.config.max_bytes = bytes;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let per_shard_ids = self.config.max_ids.div_ceil(SHARDS).max(1);
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                config: self.config,
                per_shard_ids,
                ids: AtomicUsize::new(0),
                events: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                sweeper_started: AtomicBool::new(false),
                attached: AtomicBool::new(false),
                recent: Recent::new(Duration::from_secs(5 * 60)),
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::builder().build()
    }
}

impl MemoryStore {
    /// A store with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder to set the limits.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// Drops expired events and forgets idle ids now.
    ///
    /// This also happens lazily on every access to an id and, when the store
    /// is used inside a tokio runtime, in a background task (started again on
    /// the runtime at hand if the runtime that ran it has shut down).
    pub fn sweep(&self) {
        self.inner.sweep(Instant::now());
    }
}

impl Inner {
    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(id) as usize) % self.shards.len();
        // A panic while a shard was locked left plain data behind, not a
        // broken invariant worth poisoning every later request for.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let period = self
            .config
            .event_ttl
            .min(self.config.id_idle_ttl)
            .div_f64(4.0)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let store = Arc::downgrade(self);
        let running = Sweeping(store.clone());
        runtime.spawn(async move {
            let _running = running;
            sweep_periodically(store, period).await;
        });
    }

    fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let Shard { logs, watchers } = &mut *shard;
            let before = logs.len();
            let config = &self.config;
            logs.retain(|id, log| {
                log.expire(now, config, self);
                let idle = !watchers.contains_key(id)
                    && now.saturating_duration_since(log.last_active) >= config.id_idle_ttl;
                if idle {
                    self.forget_events(log);
                }
                !idle
            });
            self.ids.fetch_sub(before - logs.len(), Ordering::Relaxed);
        }
    }

    /// Uncounts a log that is being forgotten, with its events.
    fn forget_events(&self, log: &Log) {
        let bytes: usize = log.events.iter().map(|kept| kept.event.kept_size()).sum();
        self.events.fetch_sub(log.events.len(), Ordering::Relaxed);
        self.bytes
            .fetch_sub(bytes + log.fixed_bytes, Ordering::Relaxed);
    }

    /// The log of `id`, created (with a fresh epoch) when there is none, and
    /// whether it was.
    fn log_mut<'a>(
        &self,
        shard: &'a mut Shard,
        id: &str,
        now: Instant,
    ) -> Result<(&'a mut Log, bool), StoreError> {
        let created = !shard.logs.contains_key(id);
        if created {
            if shard.logs.len() >= self.per_shard_ids {
                self.make_room(shard, now);
                if shard.logs.len() >= self.per_shard_ids {
                    return Err(StoreError::TooManyIds {
                        limit: self.config.max_ids,
                    });
                }
            }
            let log = Log::new(now, id);
            self.bytes.fetch_add(log.fixed_bytes, Ordering::Relaxed);
            shard.logs.insert(id.into(), log);
            self.ids.fetch_add(1, Ordering::Relaxed);
        }
        let log = shard.logs.get_mut(id).expect("inserted above");
        log.expire(now, &self.config, self);
        log.last_active = now;
        Ok((log, created))
    }

    /// Forgets expired idle ids of a full shard and, if that is not enough,
    /// the least recently active eighth of its idle ids, so that a flood of
    /// new ids costs amortised constant time.
    fn make_room(&self, shard: &mut Shard, now: Instant) {
        let config = &self.config;
        let Shard { logs, watchers } = shard;
        let before = logs.len();
        logs.retain(|id, log| {
            let expired = !watchers.contains_key(id)
                && now.saturating_duration_since(log.last_active) >= config.id_idle_ttl;
            if expired {
                self.forget_events(log);
            }
            !expired
        });
        if logs.len() >= self.per_shard_ids {
            let mut idle: Vec<Instant> = logs
                .iter()
                .filter(|(id, _)| !watchers.contains_key(*id))
                .map(|(_, log)| log.last_active)
                .collect();
            if !idle.is_empty() {
                let evict = (self.per_shard_ids / 8).clamp(1, idle.len());
                let (_, cutoff, _) = idle.select_nth_unstable(evict - 1);
                let cutoff = *cutoff;
                let mut left = evict;
                logs.retain(|id, log| {
                    let evicted =
                        left > 0 && !watchers.contains_key(id) && log.last_active <= cutoff;
                    if evicted {
                        left -= 1;
                        self.forget_events(log);
                    }
                    !evicted
                });
            }
        }
        let forgotten = before - logs.len();
        if forgotten > 0 {
            self.ids.fetch_sub(forgotten, Ordering::Relaxed);
            tracing::debug!(forgotten, "memory store forgot idle ids to make room");
        }
    }

    fn append(self: &Arc<Self>, id: &str, event: Event) -> Result<Cursor, StoreError> {
        self.ensure_sweeper();
        // Copied before the shard is locked; see `Event::compacted`.
        let event = event.compacted();
        let size = event.kept_size();
        let now = Instant::now();
        let mut shard = self.shard(id);
        let (log, created) = self.log_mut(&mut shard, id, now)?;
        // The event that a full log drops makes room for the new one; a
        // queue that is full grows to the next size (at most the capacity).
        let full = log.events.len() >= self.config.capacity;
        let freed = if full {
            log.events
                .front()
                .map_or(0, |oldest| oldest.event.kept_size())
        } else {
            0
        };
        let slots = if !full && log.events.len() == log.events.capacity() {
            (log.events.capacity() * 2).max(4).min(self.config.capacity) - log.events.capacity()
        } else {
            0
        };
        let grow = (size + slots * SLOT_COST).saturating_sub(freed);
        if self.bytes.fetch_add(grow, Ordering::Relaxed) + grow > self.config.max_bytes {
            self.bytes.fetch_sub(grow, Ordering::Relaxed);
            if created {
                let log = shard.logs.remove(id).expect("created above");
                self.bytes.fetch_sub(log.fixed_bytes, Ordering::Relaxed);
                self.ids.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(StoreError::Full {
                limit: self.config.max_bytes,
            });
        }
        // `grow` was added; the exact sum is restored below.
        self.bytes
            .fetch_add(size + slots * SLOT_COST - grow, Ordering::Relaxed);
        if full {
            let oldest = log.events.pop_front().expect("a full log has events");
            self.events.fetch_sub(1, Ordering::Relaxed);
            self.bytes
                .fetch_sub(oldest.event.kept_size(), Ordering::Relaxed);
        } else if slots > 0 {
            log.events.reserve_exact(slots);
            log.fixed_bytes += slots * SLOT_COST;
            // `reserve_exact` may give more than asked: count what it gave.
            let extra = log.events.capacity() - log.events.len() - slots;
            if extra > 0 {
                log.fixed_bytes += extra * SLOT_COST;
                self.bytes.fetch_add(extra * SLOT_COST, Ordering::Relaxed);
            }
        }
        let seq = log.next_seq;
        log.next_seq += 1;
        log.events.push_back(Kept {
            seq,
            kept_at: now,
            event,
        });
        self.events.fetch_add(1, Ordering::Relaxed);
        Ok(Cursor::new(log.epoch, seq))
    }

    fn read(
        self: &Arc<Self>,
        id: &str,
        from: ReadFrom,
        max_events: usize,
    ) -> Result<ReadResult, StoreError> {
        self.ensure_sweeper();
        let mut shard = self.shard(id);
        let (log, _) = self.log_mut(&mut shard, id, Instant::now())?;
        Ok(log.read(from, max_events.max(1)))
    }

    fn commit(&self, id: &str, cursor: Cursor) {
        let mut shard = self.shard(id);
        if let Some(log) = shard.logs.get_mut(id) {
            if log.epoch == cursor.epoch() && cursor.seq() < log.next_seq {
                log.delivered = Some(log.delivered.unwrap_or(0).max(cursor.seq()));
            }
        }
    }

    fn watch(&self, id: &str) {
        let mut shard = self.shard(id);
        match shard.watchers.get_mut(id) {
            Some(count) => *count += 1,
            None => {
                shard.watchers.insert(id.into(), 1);
            }
        }
    }

    fn unwatch(&self, id: &str) {
        let mut shard = self.shard(id);
        if let Some(count) = shard.watchers.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                shard.watchers.remove(id);
            }
        }
        if let Some(log) = shard.logs.get_mut(id) {
            log.last_active = Instant::now();
        }
    }
}

/// Held by the sweeper task: when its runtime shuts down and drops the
/// task, the next access to the store starts a sweeper on the runtime at
/// hand (a store may outlive the runtime that first used it, as in tests or
/// in a program that runs several runtimes one after another).
struct Sweeping(Weak<Inner>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(store) = self.0.upgrade() {
            store.sweeper_started.store(false, Ordering::Relaxed);
        }
    }
}

async fn sweep_periodically(store: Weak<Inner>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(store) = store.upgrade() else { return };
        store.sweep(Instant::now());
    }
}

impl Log {
    fn new(now: Instant, id: &str) -> Self {
        Log {
            epoch: fastrand::u64(..),
            next_seq: 1,
            events: VecDeque::new(),
            delivered: None,
            last_active: now,
            fixed_bytes: log_cost(id),
        }
    }

    /// The sequence number of the oldest kept event, or of the next one when
    /// none is kept.
    fn first_seq(&self) -> u64 {
        self.events.front().map_or(self.next_seq, |kept| kept.seq)
    }

    fn expire(&mut self, now: Instant, config: &Config, counters: &Inner) {
        while let Some(oldest) = self.events.front() {
            if now.saturating_duration_since(oldest.kept_at) < config.event_ttl {
                break;
            }
            let oldest = self.events.pop_front().expect("front exists");
            counters.events.fetch_sub(1, Ordering::Relaxed);
            counters
                .bytes
                .fetch_sub(oldest.event.kept_size(), Ordering::Relaxed);
        }
    }

    fn read(&self, from: ReadFrom, max_events: usize) -> ReadResult {
        let first = self.first_seq();
        let start = first - 1;
        // `after` is the last sequence number the client has; `gap` whether
        // events it has not seen are gone.
        let (position, after, gap) = match from {
            ReadFrom::Cursor(cursor) => {
                if cursor.epoch() == self.epoch && cursor.seq() < self.next_seq {
                    (cursor, cursor.seq(), cursor.seq() < start)
                } else {
                    // Another incarnation of the log, or a sequence number this
                    // log never gave: whatever the client missed is unknown.
                    (cursor, start, true)
                }
            }
            ReadFrom::Start => (Cursor::new(self.epoch, start), start, false),
            ReadFrom::Delivered => match self.delivered {
                Some(delivered) => (
                    Cursor::new(self.epoch, delivered),
                    delivered,
                    delivered < start,
                ),
                None => (Cursor::new(self.epoch, start), start, false),
            },
        };
        let skip = (after.max(start) - start) as usize;
        let mut found = self.events.iter().skip(skip).take(max_events);
        let result = match (found.next(), max_events) {
            (None, _) => ReadResult::empty(position),
            (Some(kept), 1) => ReadResult::with_event(position, kept.stored(self.epoch)),
            (Some(kept), _) => {
                let mut events = Vec::with_capacity(max_events.min(self.events.len()));
                events.push(kept.stored(self.epoch));
                events.extend(found.map(|kept| kept.stored(self.epoch)));
                ReadResult::with_events(position, events)
            }
        };
        result.gap(gap)
    }
}

impl Kept {
    fn stored(&self, epoch: u64) -> StoredEvent {
        StoredEvent {
            cursor: Cursor::new(epoch, self.seq),
            event: self.event.clone(),
        }
    }
}

impl Store for MemoryStore {
    fn append(&self, id: &str, event: Event) -> StoreFuture<Result<Cursor, StoreError>> {
        StoreFuture::ready(self.inner.append(id, event))
    }

    fn append_once(
        &self,
        id: &str,
        key: &str,
        event: Event,
    ) -> StoreFuture<Result<(Cursor, bool), StoreError>> {
        StoreFuture::ready(
            self.inner
                .recent
                .once(id, key, || self.inner.append(id, event)),
        )
    }

    fn read(
        &self,
        id: &str,
        from: ReadFrom,
        max_events: usize,
    ) -> StoreFuture<Result<ReadResult, StoreError>> {
        StoreFuture::ready(self.inner.read(id, from, max_events))
    }

    fn commit(&self, id: &str, cursor: Cursor) -> StoreFuture<Result<(), StoreError>> {
        self.inner.commit(id, cursor);
        StoreFuture::ready(Ok(()))
    }

    fn watch(&self, id: &str) -> StoreFuture<Result<(), StoreError>> {
        self.inner.watch(id);
        StoreFuture::ready(Ok(()))
    }

    fn unwatch(&self, id: &str) {
        self.inner.unwatch(id);
    }

    fn attach(&self, _notifier: super::Notifier) {
        if self.inner.attached.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a MemoryStore serves one hub: publishes through one hub do not wake polls parked on another; share the Hub instead"
            );
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats::new(
            self.inner.ids.load(Ordering::Relaxed),
            self.inner.events.load(Ordering::Relaxed),
            self.inner.bytes.load(Ordering::Relaxed),
        )
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ready<T>(future: StoreFuture<T>) -> T {
        match future.into_ready() {
            Ok(value) => value,
            Err(_) => panic!("the memory store answers at once"),
        }
    }

    fn append(store: &MemoryStore, id: &str, n: u64) -> Cursor {
        ready(store.append(id, Event::new(n.to_string()))).expect("append")
    }

    fn read(store: &MemoryStore, id: &str, from: ReadFrom) -> ReadResult {
        ready(store.read(id, from, 1)).expect("read")
    }

    fn body(result: &ReadResult) -> Option<String> {
        result
            .events()
            .first()
            .map(|e| String::from_utf8(e.event.data().to_vec()).unwrap())
    }

    #[test]
    fn cursors_increase_and_replay_the_next_event() {
        let store = MemoryStore::new();
        let c1 = append(&store, "a", 1);
        let c2 = append(&store, "a", 2);
        assert_eq!(c1.epoch(), c2.epoch());
        assert_eq!((c1.seq(), c2.seq()), (1, 2));
        let next = read(&store, "a", ReadFrom::Cursor(c1));
        assert_eq!(body(&next).as_deref(), Some("2"));
        assert!(!next.has_gap());
        assert!(read(&store, "a", ReadFrom::Cursor(c2)).is_empty());
    }

    #[test]
    fn a_new_id_starts_at_its_oldest_kept_event_and_commit_moves_it() {
        let store = MemoryStore::builder().capacity(2).build();
        for n in 1..=3 {
            append(&store, "a", n);
        }
        let first = read(&store, "a", ReadFrom::Delivered);
        assert_eq!(body(&first).as_deref(), Some("2"));
        assert!(
            !first.has_gap(),
            "a client that never polled missed nothing"
        );
        assert_eq!(first.position().seq(), 1);
        ready(store.commit("a", first.events()[0].cursor)).unwrap();
        let second = read(&store, "a", ReadFrom::Delivered);
        assert_eq!(body(&second).as_deref(), Some("3"));
        // Reading never consumes.
        assert_eq!(
            body(&read(&store, "a", ReadFrom::Delivered)).as_deref(),
            Some("3")
        );
    }

    #[test]
    fn start_reads_the_oldest_kept_event_whatever_was_delivered() {
        let store = MemoryStore::builder().capacity(2).build();
        for n in 1..=3 {
            append(&store, "a", n);
        }
        let last = read(&store, "a", ReadFrom::Delivered).events()[0].cursor;
        ready(store.commit("a", Cursor::new(last.epoch(), 3))).unwrap();
        let start = read(&store, "a", ReadFrom::Start);
        assert_eq!(body(&start).as_deref(), Some("2"));
        assert!(!start.has_gap());
        assert_eq!(start.position(), Cursor::new(last.epoch(), 1));
        let fresh = read(&store, "b", ReadFrom::Start);
        assert!(fresh.is_empty() && !fresh.has_gap());
        assert_eq!(fresh.position().seq(), 0);
    }

    #[test]
    fn a_cursor_behind_the_log_or_of_another_epoch_is_a_gap() {
        let store = MemoryStore::builder().capacity(2).build();
        let c1 = append(&store, "a", 1);
        for n in 2..=4 {
            append(&store, "a", n);
        }
        let behind = read(&store, "a", ReadFrom::Cursor(c1));
        assert_eq!(body(&behind).as_deref(), Some("3"));
        assert!(behind.has_gap());

        let foreign = Cursor::new(c1.epoch().wrapping_add(1), 1);
        let result = read(&store, "a", ReadFrom::Cursor(foreign));
        assert_eq!(body(&result).as_deref(), Some("3"));
        assert!(result.has_gap());
        assert_eq!(result.position(), foreign);

        let future = Cursor::new(c1.epoch(), 99);
        let result = read(&store, "a", ReadFrom::Cursor(future));
        assert!(result.has_gap());
        assert_eq!(body(&result).as_deref(), Some("3"));
    }

    #[test]
    fn expired_events_leave_a_gap_for_committed_clients() {
        let store = MemoryStore::builder()
            .event_ttl(Duration::from_millis(0))
            .build();
        let c1 = append(&store, "a", 1);
        ready(store.commit("a", c1)).unwrap();
        append(&store, "a", 2);
        // Both expired at once: nothing to read, and the client is behind.
        let result = read(&store, "a", ReadFrom::Delivered);
        assert!(result.is_empty());
        assert_eq!(result.position(), c1);
        assert!(result.has_gap());
        assert_eq!(store.stats().events, 0);
    }

    #[test]
    fn batches_read_in_order_up_to_the_limit() {
        let store = MemoryStore::new();
        let c0 = append(&store, "a", 0);
        for n in 1..=5 {
            append(&store, "a", n);
        }
        let result = ready(store.read("a", ReadFrom::Cursor(c0), 3)).unwrap();
        let bodies: Vec<_> = result
            .events()
            .iter()
            .map(|e| String::from_utf8(e.event.data().to_vec()).unwrap())
            .collect();
        assert_eq!(bodies, ["1", "2", "3"]);
    }

    #[test]
    fn a_full_log_at_the_byte_budget_still_takes_events_it_makes_room_for() {
        let budget = log_cost("a") + 2 * SLOT_COST + 20;
        let store = MemoryStore::builder().capacity(2).max_bytes(budget).build();
        for _ in 0..5 {
            ready(store.append("a", Event::new("0123456789"))).unwrap();
        }
        assert_eq!(store.stats(), StoreStats::new(1, 2, budget));
        let err = ready(store.append("b", Event::new("x"))).unwrap_err();
        assert!(matches!(err, StoreError::Full { limit } if limit == budget));
    }

    /// The review's case: 30,000 ids of 64 empty events each under a budget
    /// of 1 KiB once kept 1.92 M events (216 MiB). Every event and every log
    /// costs something, so the budget holds.
    #[test]
    fn the_byte_budget_bounds_many_ids_of_empty_events() {
        let store = MemoryStore::builder().max_bytes(1024).build();
        let mut kept = 0;
        for n in 0..30_000 {
            let id = format!("id-{n}");
            for _ in 0..64 {
                if ready(store.append(&id, Event::new(""))).is_ok() {
                    kept += 1;
                }
            }
        }
        let stats = store.stats();
        assert!(stats.bytes <= 1024, "{stats:?}");
        assert!(kept > 0 && stats.events == kept, "{stats:?}");
        assert!(stats.events <= 1024 / SLOT_COST, "{stats:?}");
        assert!(stats.ids <= 1024 / LOG_COST, "{stats:?}");
        // Forgetting the logs gives every counted byte back.
        let store_inner = &store.inner;
        for shard in store_inner.shards.iter() {
            let mut shard = shard.lock().unwrap();
            for (_, log) in shard.logs.drain() {
                store_inner.forget_events(&log);
            }
        }
        assert_eq!(store.stats().bytes, 0);
    }

    #[test]
    fn kept_events_do_not_pin_the_buffers_they_were_cut_from() {
        let store = MemoryStore::new();
        // As a request body is: a small view into the connection's buffer.
        let buffer = bytes::Bytes::from(vec![b'7'; 64 * 1024]);
        let body = buffer.slice(10..20);
        let content_type = http::HeaderValue::from_maybe_shared(buffer.slice(0..4)).unwrap();
        ready(store.append("a", Event::new(body).content_type(content_type))).unwrap();
        assert!(buffer.is_unique(), "the log keeps its own copy, not a view");
        let kept = read(&store, "a", ReadFrom::Start);
        assert_eq!(kept.events()[0].event.data().as_ref(), b"7777777777");
    }

    #[test]
    fn the_byte_budget_refuses_appends() {
        // A first append makes a log with a queue of 4 slots.
        let budget = log_cost("a") + 4 * SLOT_COST + 10;
        let store = MemoryStore::builder().max_bytes(budget).build();
        ready(store.append("a", Event::new("0123456789"))).unwrap();
        let err = ready(store.append("b", Event::new("x"))).unwrap_err();
        assert!(matches!(err, StoreError::Full { limit } if limit == budget));
        assert_eq!(
            store.stats(),
            StoreStats::new(1, 1, budget),
            "no empty log is left for b"
        );
    }

    #[test]
    fn idle_ids_are_forgotten_and_come_back_with_a_new_epoch() {
        let store = MemoryStore::builder()
            .id_idle_ttl(Duration::from_millis(0))
            .build();
        let old = append(&store, "a", 1);
        store.sweep();
        assert_eq!(store.stats(), StoreStats::new(0, 0, 0));
        let new = append(&store, "a", 2);
        assert_ne!(old.epoch(), new.epoch());
        let result = read(&store, "a", ReadFrom::Cursor(old));
        assert!(result.has_gap());
        assert_eq!(body(&result).as_deref(), Some("2"));
    }

    #[test]
    fn watched_ids_are_never_evicted() {
        let store = MemoryStore::builder()
            .id_idle_ttl(Duration::from_millis(0))
            .build();
        read(&store, "held", ReadFrom::Delivered);
        ready(store.watch("held")).unwrap();
        store.sweep();
        assert_eq!(store.stats().ids, 1);
        store.unwatch("held");
        store.sweep();
        assert_eq!(store.stats().ids, 0);
    }

    #[test]
    fn the_id_cap_evicts_the_least_recently_active() {
        let store = MemoryStore::builder().max_ids(SHARDS * 4).build();
        for n in 0..10_000 {
            append(&store, &format!("id-{n}"), n);
        }
        let stats = store.stats();
        assert!(stats.ids <= SHARDS * 4, "{stats:?}");
        assert_eq!(stats.events, stats.ids);
    }

    #[test]
    fn the_id_cap_refuses_when_every_id_is_held() {
        let store = MemoryStore::builder().max_ids(1).build();
        // One id per shard at most: fill the shard of "a" with a held id.
        read(&store, "a", ReadFrom::Delivered);
        ready(store.watch("a")).unwrap();
        let same_shard = (0..)
            .map(|n| format!("b{n}"))
            .find(|id| {
                store.inner.hasher.hash_one(id.as_str()) as usize % SHARDS
                    == store.inner.hasher.hash_one("a") as usize % SHARDS
            })
            .unwrap();
        let err = ready(store.append(&same_shard, Event::new("x"))).unwrap_err();
        assert!(matches!(err, StoreError::TooManyIds { limit: 1 }));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append,
        ReadCursor(usize),
        ReadDelivered,
        Commit(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Append),
            2 => (0usize..40).prop_map(Op::ReadCursor),
            2 => Just(Op::ReadDelivered),
            1 => (0usize..40).prop_map(Op::Commit),
        ]
    }

    proptest! {
        /// The log and cursor rules against a model: every read returns the
        /// event right after the client's position when it is still kept,
        /// else the oldest kept event flagged as a gap; the delivery position
        /// only moves forward; nothing is consumed by reading.
        #[test]
        fn log_follows_the_cursor_rules(capacity in 1usize..6, ops in prop::collection::vec(op(), 1..80)) {
            let store = MemoryStore::builder().capacity(capacity).build();
            let mut cursors: Vec<Cursor> = Vec::new();
            let mut delivered: Option<u64> = None;
            for op in ops {
                let next_seq = cursors.len() as u64 + 1;
                let first_kept = next_seq.saturating_sub(capacity as u64).max(1);
                match op {
                    Op::Append => {
                        let cursor = append(&store, "id", next_seq);
                        prop_assert_eq!(cursor.seq(), next_seq);
                        if let Some(last) = cursors.last() {
                            prop_assert_eq!(cursor.epoch(), last.epoch());
                        }
                        cursors.push(cursor);
                    }
                    Op::ReadCursor(i) if !cursors.is_empty() => {
                        let cursor = cursors[i % cursors.len()];
                        let result = read(&store, "id", ReadFrom::Cursor(cursor));
                        prop_assert_eq!(result.position(), cursor);
                        let want = cursor.seq() + 1;
                        if want >= next_seq {
                            prop_assert!(result.is_empty());
                            prop_assert!(!result.has_gap());
                        } else {
                            let got = result.events()[0].cursor.seq();
                            prop_assert_eq!(got, want.max(first_kept));
                            prop_assert_eq!(result.has_gap(), want < first_kept);
                        }
                    }
                    Op::ReadCursor(_) => {}
                    Op::ReadDelivered => {
                        let result = read(&store, "id", ReadFrom::Delivered);
                        let after = delivered.unwrap_or(first_kept - 1);
                        prop_assert_eq!(result.position().seq(), after);
                        prop_assert_eq!(result.has_gap(), delivered.is_some() && after + 1 < first_kept);
                        if after + 1 >= next_seq {
                            prop_assert!(result.is_empty());
                        } else {
                            prop_assert_eq!(result.events()[0].cursor.seq(), (after + 1).max(first_kept));
                        }
                    }
                    Op::Commit(i) if !cursors.is_empty() => {
                        let cursor = cursors[i % cursors.len()];
                        ready(store.commit("id", cursor)).unwrap();
                        delivered = Some(delivered.unwrap_or(0).max(cursor.seq()));
                    }
                    Op::Commit(_) => {}
                }
                prop_assert_eq!(store.stats().events, cursors.len().min(capacity));
            }
        }
    }
}
