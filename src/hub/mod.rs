//! The hub: where events are published, kept and waited for.

pub(crate) mod registry;
pub(crate) mod wait;
mod wait_for;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use self::registry::Registry;
use crate::cursor::Cursor;
use crate::error::PublishError;
use crate::event::Event;
use crate::id::check_id;
use crate::store::{MemoryStore, Notifier, Store};

pub use self::wait::{WaitError, WaitLimits};
pub use self::wait_for::WaitFor;

/// The default cap on an event's body: 1 MiB.
const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
/// The default cap on a client id's length, in bytes once decoded.
const DEFAULT_MAX_ID_LEN: usize = 256;

/// Publishes events for client ids and holds the registry of polls waiting
/// for them.
///
/// A `Hub` is a cheap handle: clone it into the [`LongPollLayer`] and into
/// whatever publishes. Events are kept in a [`Store`]: in memory by default
/// ([`MemoryStore`]), or in any store given to [`HubBuilder::store`].
///
/// ```
/// use tower_longpoll::{Event, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_longpoll::PublishError> {
/// let hub = Hub::new();
/// let cursor = hub.publish("client-42", Event::new("hello")).await?;
/// assert_eq!(cursor.seq(), 1);
/// assert_eq!(hub.stats().kept_events, 1);
/// # Ok(())
/// # }
/// ```
///
/// [`LongPollLayer`]: crate::LongPollLayer
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    pub(crate) max_event_bytes: usize,
    pub(crate) max_id_len: usize,
}

/// Builds a [`Hub`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct HubBuilder {
    store: Option<Arc<dyn Store>>,
    shutdown: Option<CancellationToken>,
    max_event_bytes: usize,
    max_id_len: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    shed: AtomicU64,
}

/// What happened to a poll or an event, for the counters behind [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Delivered,
    TimedOut,
    Cancelled,
    Rejected,
    Shed,
}

/// A snapshot of what a hub holds and has done, from [`Hub::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Polls parked now, waiting for an event.
    pub parked: usize,
    /// Client ids the store keeps a log for.
    pub ids: usize,
    /// Events kept over all logs.
    pub kept_events: usize,
    /// Bytes kept over all logs, as the store counts them (see
    /// [`StoreStats::bytes`](crate::store::StoreStats::bytes)).
    pub kept_bytes: usize,
    /// Events published through this hub.
    pub published: u64,
    /// Event responses handed to the connection (counted as it first polls
    /// the body, just before the bytes are handed over; for an event without
    /// bytes, whose body is never polled, as the response is handed over),
    /// and `HEAD` answers that found an event.
    pub delivered: u64,
    /// Polls answered with the keepalive response.
    pub timed_out: u64,
    /// Polls whose client went away before the response was handed over:
    /// nothing was consumed for them.
    pub cancelled: u64,
    /// Polls refused: bad input, limits, unavailable store.
    pub rejected: u64,
    /// Polls answered `503` because the hub was shutting down.
    pub shed: u64,
}

impl Default for HubBuilder {
    fn default() -> Self {
        HubBuilder {
            store: None,
            shutdown: None,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_id_len: DEFAULT_MAX_ID_LEN,
        }
    }
}

impl HubBuilder {
    /// Keeps events in `store` instead of a default [`MemoryStore`].
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Keeps events in a store already behind an `Arc`.
    ///
    /// A store serves one hub: its waiters are woken by publishes through
    /// that hub (and, for a store shared by several processes, by those of
    /// other processes). To publish from several places, clone the [`Hub`].
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The largest event body [`Hub::publish`] accepts (default 1 MiB).
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// The longest client id accepted, in bytes once percent-decoded
    /// (default 256), by publishes and by polls alike.
    pub fn max_id_len(mut self, bytes: usize) -> Self {
        self.max_id_len = bytes;
        self
    }

    /// Shuts the hub down when `token` is cancelled (see [`Hub::shutdown`]).
    ///
    /// The hub waits on a child of `token`: [`Hub::shutdown`] does not
    /// cancel `token` itself, which stays the caller's.
    pub fn shutdown_on(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token.child_token());
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let registry = Arc::new(Registry::new());
        store.attach(Notifier::new(Arc::downgrade(&registry)));
        Hub {
            inner: Arc::new(HubInner {
                store,
                registry,
                counters: Counters::default(),
                shutdown: self.shutdown.unwrap_or_default(),
                max_event_bytes: self.max_event_bytes,
                max_id_len: self.max_id_len,
            }),
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub keeping events in memory, with the default limits.
    pub fn new() -> Self {
        HubBuilder::default().build()
    }

    /// A builder to choose the store and limits.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// Publishes `event` for `id` and returns its cursor.
    ///
    /// Every poll parked on `id` is answered with the event; when none is,
    /// the event is kept in the id's log for its next poll. The cursor is
    /// returned once the store has the event, never before.
    pub async fn publish(&self, id: impl AsRef<str>, event: Event) -> Result<Cursor, PublishError> {
        self.publish_keyed(id.as_ref(), None, event).await
    }

    /// Publishes `event` for `id` once per idempotency `key`: a retry with the
    /// same key within the store's idempotency window (default 5 minutes)
    /// returns the first publish's cursor and keeps nothing new, so a
    /// publisher may retry after a timeout or a lost reply without keeping
    /// the event twice.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower_longpoll::{Event, Hub};
    ///
    /// let hub = Hub::new();
    /// let first = hub.publish_idempotent("amy", "order-17", Event::new("paid")).await.unwrap();
    /// let retry = hub.publish_idempotent("amy", "order-17", Event::new("paid")).await.unwrap();
    /// assert_eq!(first, retry);
    /// assert_eq!(hub.stats().kept_events, 1);
    /// assert_eq!(hub.stats().published, 1);
    /// # }
    /// ```
    pub async fn publish_idempotent(
        &self,
        id: impl AsRef<str>,
        key: impl AsRef<str>,
        event: Event,
    ) -> Result<Cursor, PublishError> {
        self.publish_keyed(id.as_ref(), Some(key.as_ref()), event)
            .await
    }

    async fn publish_keyed(
        &self,
        id: &str,
        key: Option<&str>,
        event: Event,
    ) -> Result<Cursor, PublishError> {
        let inner = &*self.inner;
        check_id(id, inner.max_id_len).map_err(PublishError::InvalidId)?;
        if event.has_invalid_content_type() {
            return Err(PublishError::InvalidContentType);
        }
        if let Some(status) = event.status_value() {
            let bodiless = matches!(status.as_u16(), 204 | 304);
            if !(200..=599).contains(&status.as_u16()) || (bodiless && !event.data().is_empty()) {
                return Err(PublishError::InvalidStatus(status));
            }
        }
        let size = event.data().len();
        if size > inner.max_event_bytes {
            return Err(PublishError::TooLarge {
                size,
                limit: inner.max_event_bytes,
            });
        }
        let appended = match key {
            None => inner
                .store
                .append(id, event)
                .await
                .map(|cursor| (cursor, true)),
            Some(key) => inner.store.append_once(id, key, event).await,
        };
        // Even a failed append may have been kept (a reply lost with the
        // connection): waking this process's waiters to read costs little.
        let woke = inner.registry.notify(id);
        let (cursor, fresh) = appended.map_err(PublishError::Store)?;
        if fresh {
            // A retry that kept nothing is not another publish.
            inner.counters.published.fetch_add(1, Ordering::Relaxed);
        }
        tracing::trace!(client_id = id, %cursor, "published");
        if woke {
            // Let the polls just woken answer before the publisher goes on
            // (typically to answer its own request): on a busy runtime that
            // takes a socket write, and often a context switch, off the
            // event's way to its subscribers.
            tokio::task::yield_now().await;
        }
        Ok(cursor)
    }

    /// Answers every parked poll, and every poll from now on, with
    /// `503 Service Unavailable` and a jittered `Retry-After`, so that a
    /// graceful server shutdown does not wait for poll timeouts.
    pub fn shutdown(&self) {
        if !self.inner.shutdown.is_cancelled() {
            tracing::info!(
                parked = self.inner.registry.parked(),
                "long-poll hub shutting down"
            );
        }
        self.inner.shutdown.cancel();
    }

    /// Whether [`shutdown`](Hub::shutdown) was called (or the token given to
    /// [`HubBuilder::shutdown_on`] cancelled).
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// What the hub holds now and what it has done so far.
    pub fn stats(&self) -> Stats {
        let store = self.inner.store.stats();
        let counters = &self.inner.counters;
        Stats {
            parked: self.inner.registry.parked(),
            ids: store.ids,
            kept_events: store.events,
            kept_bytes: store.bytes,
            published: counters.published.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            timed_out: counters.timed_out.load(Ordering::Relaxed),
            cancelled: counters.cancelled.load(Ordering::Relaxed),
            rejected: counters.rejected.load(Ordering::Relaxed),
            shed: counters.shed.load(Ordering::Relaxed),
        }
    }

    /// The store the hub keeps events in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Counts one poll or event in [`Stats`].
    pub(crate) fn count(&self, what: Count) {
        let counters = &self.inner.counters;
        let counter = match what {
            Count::Delivered => &counters.delivered,
            Count::TimedOut => &counters.timed_out,
            Count::Cancelled => &counters.cancelled,
            Count::Rejected => &counters.rejected,
            Count::Shed => &counters.shed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn max_id_len(&self) -> usize {
        self.inner.max_id_len
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("stats", &self.stats()).finish()
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_id_len", &self.max_id_len)
            .finish_non_exhaustive()
    }
}
