//! Where events are kept: the [`Store`] trait and the in-memory store.
//!
//! A [`Hub`](crate::Hub) keeps the requests parked on this process in its own
//! registry and keeps events in a `Store`. The store owns the per-id logs, the
//! cursors and the delivery position of clients that send no cursor; the hub
//! asks it to [`append`](Store::append), [`read`](Store::read) and
//! [`commit`](Store::commit), and wakes its local waiters after an append. A
//! store shared by several processes tells the hub of events appended
//! elsewhere through the [`Notifier`] it is given with [`Store::attach`].

mod future;
mod idempotency;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Weak;

pub(crate) use self::future::PendingStore;
pub use self::future::StoreFuture;
pub use self::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisStore, RedisStoreBuilder};

use crate::cursor::Cursor;
use crate::event::{Event, StoredEvent};
use crate::hub::registry::Registry;

/// A boxed error from a store's backend.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Keeps the event log of every client id.
///
/// The methods return a [`StoreFuture`], which is either a value computed at
/// once (the in-memory store never waits, and costs no allocation) or a boxed
/// future for a store that talks to a server.
///
/// ## Contract
/// - `append` gives each event of an id a cursor greater than every cursor
///   given before in the same epoch, and does not return before the event is
///   durable in the sense of the store (visible to every later `read`).
/// - `read` never consumes anything; only `commit` moves the delivery
///   position, and only forward.
/// - A store must not report an event as appended when it may not have kept it.
pub trait Store: Send + Sync + 'static {
    /// Appends `event` to the log of `id` and returns its cursor.
    fn append(&self, id: &str, event: Event) -> StoreFuture<Result<Cursor, StoreError>>;

    /// Appends `event` to the log of `id` unless a publish to `id` with the
    /// idempotency `key` got a cursor within the store's idempotency window:
    /// then that cursor is returned and nothing is appended. The flag says
    /// whether the event was appended now.
    ///
    /// The default appends every time: a store that does not remember keys
    /// cannot tell a retry. This crate's stores remember them.
    fn append_once(
        &self,
        id: &str,
        key: &str,
        event: Event,
    ) -> StoreFuture<Result<(Cursor, bool), StoreError>> {
        let _ = key;
        match self.append(id, event).into_ready() {
            Ok(appended) => StoreFuture::ready(appended.map(|cursor| (cursor, true))),
            Err(pending) => {
                StoreFuture::new(async move { pending.await.map(|cursor| (cursor, true)) })
            }
        }
    }

    /// Reads up to `max_events` (at least 1) events of `id` that come after `from`.
    ///
    /// Reading an id that has no log yet creates an empty one, so that the
    /// client can be given a cursor for the id's start.
    fn read(
        &self,
        id: &str,
        from: ReadFrom,
        max_events: usize,
    ) -> StoreFuture<Result<ReadResult, StoreError>>;

    /// Records that every event of `id` up to `cursor` has been handed to a
    /// client, moving the delivery position used by [`ReadFrom::Delivered`].
    /// A cursor of another epoch, or behind the position, changes nothing.
    fn commit(&self, id: &str, cursor: Cursor) -> StoreFuture<Result<(), StoreError>>;

    /// Called before a waiter for `id` reads the log; resolves once the store
    /// will report events appended to `id` elsewhere through its [`Notifier`].
    ///
    /// Every call is matched by one call to [`unwatch`](Store::unwatch). A
    /// store that only sees appends made through its own hub has nothing to
    /// do here, which is the default.
    fn watch(&self, id: &str) -> StoreFuture<Result<(), StoreError>> {
        let _ = id;
        StoreFuture::ready(Ok(()))
    }

    /// Ends one [`watch`](Store::watch) of `id`.
    fn unwatch(&self, id: &str) {
        let _ = id;
    }

    /// Gives the store the handle through which it wakes the hub's waiters
    /// for events appended by other processes. Called when a hub is built
    /// on the store; a store serves one hub.
    fn attach(&self, notifier: Notifier) {
        let _ = notifier;
    }

    /// What the store keeps now.
    fn stats(&self) -> StoreStats;
}

/// Where a read starts.
///
/// New ways to start a read may come; a store that meets one it does not
/// know should fail the read with [`StoreError::Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFrom {
    /// After the event this cursor names: the client sent its last cursor.
    Cursor(Cursor),
    /// After the id's delivery position: the client sent no cursor. An id
    /// that has never had an event committed starts at its oldest kept event.
    Delivered,
    /// From the oldest kept event, whatever the delivery position: a client
    /// starting out that wants no event lost even on its first poll
    /// (`?since=0`). Not a gap: the client claims to have nothing.
    Start,
}

/// What a [`Store::read`] found.
#[derive(Clone, Debug)]
pub struct ReadResult {
    position: Cursor,
    gap: bool,
    events: Events,
}

#[derive(Clone, Debug)]
enum Events {
    None,
    One(StoredEvent),
    Many(Vec<StoredEvent>),
}

impl ReadResult {
    /// A read that found no event after `position`.
    ///
    /// `position` is the client's cursor: what it has now (the cursor it sent,
    /// or the id's delivery position, or the id's start).
    pub fn empty(position: Cursor) -> Self {
        ReadResult {
            position,
            gap: false,
            events: Events::None,
        }
    }

    /// A read that found `events`, in log order, after `position`.
    pub fn with_events(position: Cursor, mut events: Vec<StoredEvent>) -> Self {
        let events = match events.len() {
            0 => Events::None,
            1 => Events::One(events.pop().expect("one event")),
            _ => Events::Many(events),
        };
        ReadResult {
            position,
            gap: false,
            events,
        }
    }

    /// A read that found exactly one event after `position`.
    pub fn with_event(position: Cursor, event: StoredEvent) -> Self {
        ReadResult {
            position,
            gap: false,
            events: Events::One(event),
        }
    }

    /// Marks that events between `position` and the first returned event (or
    /// the log's start) are no longer kept, or that `position` belongs to
    /// another epoch: the client may have missed events.
    pub fn gap(mut self, gap: bool) -> Self {
        self.gap = gap;
        self
    }

    /// The client's position before the returned events.
    pub fn position(&self) -> Cursor {
        self.position
    }

    /// Whether the client may have missed events.
    pub fn has_gap(&self) -> bool {
        self.gap
    }

    /// The events found, oldest first.
    pub fn events(&self) -> &[StoredEvent] {
        match &self.events {
            Events::None => &[],
            Events::One(event) => std::slice::from_ref(event),
            Events::Many(events) => events,
        }
    }

    /// Whether no event was found.
    pub fn is_empty(&self) -> bool {
        matches!(self.events, Events::None)
    }
}

/// What a store keeps, for [`Stats`](crate::Stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Client ids with a log.
    pub ids: usize,
    /// Events kept over all logs.
    pub events: usize,
    /// Bytes kept over all logs, as the store counts them against its
    /// budget ([`MemoryStore`] counts event bytes and each event's and each
    /// log's fixed cost).
    pub bytes: usize,
}

impl StoreStats {
    /// Stats with these figures.
    pub fn new(ids: usize, events: usize, bytes: usize) -> Self {
        StoreStats { ids, events, bytes }
    }
}

/// A store could not do what was asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Keeping the event would exceed the store's byte budget.
    Full {
        /// The store's budget, in bytes.
        limit: usize,
    },
    /// The store keeps as many ids as it may and none can be evicted now.
    TooManyIds {
        /// The store's cap on ids.
        limit: usize,
    },
    /// The backend failed or cannot be reached.
    Backend(BoxError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full { limit } => {
                write!(f, "the store is full (it keeps at most {limit} bytes)")
            }
            StoreError::TooManyIds { limit } => write!(
                f,
                "the store keeps {limit} client ids, its limit, and none is idle"
            ),
            StoreError::Backend(source) => write!(f, "the store's backend failed: {source}"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Backend(source) => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Wakes the waiters a hub has parked on an id; given to a store by
/// [`Store::attach`] so that it can report events appended by other processes.
#[derive(Clone)]
pub struct Notifier {
    registry: Weak<Registry>,
}

impl Notifier {
    pub(crate) fn new(registry: Weak<Registry>) -> Self {
        Notifier { registry }
    }

    /// Wakes every waiter parked on `id` in this process; each reads the log
    /// again. Cheap when nothing waits on `id`.
    pub fn notify(&self, id: &str) {
        if let Some(registry) = self.registry.upgrade() {
            registry.notify(id);
        }
    }

    /// Wakes every waiter of this process, for instance after the store lost
    /// and regained its backend and may have missed notifications.
    pub fn notify_all(&self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.notify_all();
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}
