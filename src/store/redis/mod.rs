//! A [`Store`] in Redis, shared by several nodes.
//!
//! Each id's events live in a Redis stream whose entry ids are the cursors'
//! sequence numbers, beside a hash holding the log's epoch and the delivery
//! position of clients without a cursor; every operation is one Lua script,
//! so it is atomic. A cursor issued by one node is therefore understood by
//! every node, and a client may poll node A, then node B, and miss nothing.
//!
//! A node learns of events published elsewhere through one pub/sub channel
//! per id it holds polls for: a publish wakes only the nodes that wait on
//! that id. See `docs/scaling.md` for the topology and guarantees.
//!
//! ```no_run
//! use tower_longpoll::Hub;
//! use tower_longpoll::store::RedisStore;
//!
//! # async fn run() -> Result<(), tower_longpoll::store::StoreError> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .prefix("myapp:longpoll")
//!     .connect()
//!     .await?;
//! let hub = Hub::builder().store(store).build();
//! # let _ = hub;
//! # Ok(())
//! # }
//! ```

mod scripts;
mod watch;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::Value;
use fred::types::config::{Config as FredConfig, ReconnectPolicy};
use tokio::task::JoinHandle;

use self::scripts::{Script, Scripts};
use self::watch::Watches;
use super::{Notifier, ReadFrom, ReadResult, Store, StoreError, StoreFuture, StoreStats};
use crate::cursor::Cursor;
use crate::event::{Event, StoredEvent};

/// Keeps every id's log in Redis, so that several nodes share one stream of
/// events per id. Made with [`RedisStore::builder`].
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// Configures and connects a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    capacity: usize,
    event_ttl: Duration,
    id_idle_ttl: Duration,
    command_timeout: Duration,
    connect_timeout: Duration,
    max_reconnect_delay: Duration,
    linger: Duration,
    stats_interval: Duration,
}

struct Inner {
    client: Client,
    subscriber: SubscriberClient,
    scripts: Scripts,
    config: RedisStoreBuilder,
    /// This node's name in wake-up messages, so it skips its own.
    node: String,
    notifier: Arc<OnceLock<Notifier>>,
    watches: Arc<Watches>,
    wakeups_received: Arc<AtomicU64>,
    stats: StatsCache,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct StatsCache {
    ids: AtomicUsize,
    events: AtomicUsize,
    refreshed: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl RedisStore {
    /// A builder for a store at `url` (`redis://[user:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "longpoll".to_owned(),
            capacity: 64,
            event_ttl: Duration::from_secs(5 * 60),
            id_idle_ttl: Duration::from_secs(10 * 60),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_secs(2),
            linger: Duration::from_secs(5),
            stats_interval: Duration::from_secs(10),
        }
    }

    /// Connects with the default settings.
    pub async fn connect(url: impl Into<String>) -> Result<RedisStore, StoreError> {
        Self::builder(url).connect().await
    }

    /// Wake-up messages this node has received from Redis, its own included.
    pub fn wakeups_received(&self) -> u64 {
        self.inner.wakeups_received.load(Ordering::Relaxed)
    }

    /// Ids whose wake-up channel this node is subscribed to now.
    pub fn subscribed_ids(&self) -> usize {
        self.inner.watches.subscribed()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key and channel (default `longpoll`); nodes that
    /// share events use the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most events kept per id (default 64). At least 1.
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// How long an event is kept (default 5 minutes).
    pub fn event_ttl(mut self, ttl: Duration) -> Self {
        self.event_ttl = ttl;
        self
    }

    /// How long an id with no activity is kept (default 10 minutes); Redis
    /// expires both of its keys then.
    pub fn id_idle_ttl(mut self, ttl: Duration) -> Self {
        self.id_idle_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How long a command may take before it fails (default 2 s): a publish
    /// while Redis is unreachable fails after at most this long.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long connecting may take at start (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between reconnection attempts (default 2 s); the
    /// pauses grow exponentially up to it.
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// How long a node stays subscribed to an id after its last local
    /// waiter left (default 5 s), for the client that polls again at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How often [`Store::stats`] counts the ids and events in Redis
    /// (default 10 s); counting scans the keys, so it is not done per call.
    pub fn stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval;
        self
    }

    /// Connects, failing at once with a clear error when Redis cannot be
    /// reached. Must be called inside a tokio runtime.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let url = self.url.clone();
        let failed = |what: &str, err: fred::error::Error| {
            StoreError::Backend(format!("cannot {what} Redis at {url}: {err}").into())
        };
        if !self.url.starts_with("redis") {
            return Err(StoreError::Backend(
                format!("cannot use Redis at {url}: expected a redis:// or rediss:// URL").into(),
            ));
        }
        let mut config = FredConfig::from_url(&self.url).map_err(|err| failed("use", err))?;
        config.fail_fast = true;
        let policy = ReconnectPolicy::new_exponential(
            0,
            50,
            u32::try_from(self.max_reconnect_delay.as_millis())
                .unwrap_or(u32::MAX)
                .max(50),
            2,
        );
        let builder = {
            let mut builder = fred::types::Builder::from_config(config);
            builder
                .with_connection_config(|connection| {
                    connection.connection_timeout = self.connect_timeout;
                    connection.internal_command_timeout = self.connect_timeout;
                    // An append is not idempotent: never resend one blindly
                    // after a connection drop.
                    connection.max_command_attempts = 1;
                })
                .with_performance_config(|performance| {
                    performance.default_command_timeout = self.command_timeout;
                    // Wake-ups are handled as they come; on overflow every waiter is woken.
                    performance.broadcast_channel_capacity = 4_096;
                })
                .set_policy(policy);
            builder
        };
        let client = builder.build().map_err(|err| failed("configure", err))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|err| failed("configure", err))?;
        client
            .init()
            .await
            .map_err(|err| failed("connect to", err))?;
        if let Err(err) = subscriber.init().await {
            let _ = client.quit().await;
            return Err(failed("connect to", err));
        }
        let _: Value = client
            .ping(None)
            .await
            .map_err(|err| failed("talk to", err))?;

        let node = format!("{:016x}", fastrand::u64(..));
        let notifier = Arc::new(OnceLock::new());
        let wakeups_received = Arc::new(AtomicU64::new(0));
        let (watches, tasks) = Watches::start(
            subscriber.clone(),
            format!("{}:wake:", self.prefix),
            node.clone(),
            self.linger,
            Arc::clone(&notifier),
            Arc::clone(&wakeups_received),
        );
        tracing::info!(url = %self.url, prefix = %self.prefix, "connected to Redis");
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                subscriber,
                scripts: Scripts::new(),
                config: self,
                node,
                notifier,
                watches,
                wakeups_received,
                stats: StatsCache::default(),
                tasks,
            }),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let (client, subscriber) = (self.client.clone(), self.subscriber.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = client.quit().await;
            });
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn backend(err: fred::error::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

fn malformed(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected reply from Redis: {what}").into())
}

/// Runs a script by its hash, loading it when Redis has forgotten it.
async fn run(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<Value, StoreError> {
    match client
        .evalsha::<Value, _, _, _>(script.sha1.as_str(), keys.clone(), args.clone())
        .await
    {
        Err(err) if err.details().contains("NOSCRIPT") => client
            .eval::<Value, _, _, _>(script.source.as_str(), keys, args)
            .await
            .map_err(backend),
        other => other.map_err(backend),
    }
}

/// Headers as `name: value` lines: a header value holds no CR or LF, so a
/// line break cannot occur inside one.
fn encode_headers(headers: Option<&http::HeaderMap>) -> Bytes {
    let Some(headers) = headers else {
        return Bytes::new();
    };
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    Bytes::from(out)
}

fn decode_headers(encoded: &[u8]) -> Option<http::HeaderMap> {
    let mut headers = http::HeaderMap::new();
    for line in encoded
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
    {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = http::HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        headers.append(name, http::HeaderValue::from_bytes(value).ok()?);
    }
    Some(headers)
}

fn parse_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(other.as_bytes()?).ok()?.parse().ok(),
    }
}

fn parse_entry(epoch: u64, entry: &Value) -> Option<StoredEvent> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let id = std::str::from_utf8(id.as_bytes()?).ok()?;
    let seq = id.split('-').next()?.parse().ok()?;
    let (mut data, mut content_type) = (Bytes::new(), Bytes::new());
    let (mut status, mut headers) = (Bytes::new(), Bytes::new());
    for pair in fields.chunks(2) {
        let [name, value] = pair else { continue };
        let value = Bytes::copy_from_slice(value.as_bytes().unwrap_or_default());
        match name.as_bytes()? {
            b"d" => data = value,
            b"t" => content_type = value,
            b"s" => status = value,
            b"h" => headers = value,
            _ => {}
        }
    }
    let mut event = Event::new(data);
    if !content_type.is_empty() {
        event = event.content_type(http::HeaderValue::from_maybe_shared(content_type).ok()?);
    }
    if !status.is_empty() {
        event = event.status(http::StatusCode::from_bytes(&status).ok()?);
    }
    if !headers.is_empty() {
        event = event.headers(decode_headers(&headers)?);
    }
    Some(StoredEvent {
        cursor: Cursor::new(epoch, seq),
        event,
    })
}

impl Inner {
    fn keys(&self, id: &str) -> Vec<String> {
        vec![
            format!("{}:log:{id}", self.config.prefix),
            format!("{}:meta:{id}", self.config.prefix),
        ]
    }

    fn refresh_stats_if_stale(self: &Arc<Self>) {
        let stale = self
            .stats
            .refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= self.config.stats_interval);
        if !stale || self.stats.refreshing.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.stats.refreshing.store(false, Ordering::Relaxed);
            return;
        };
        let store = Arc::downgrade(self);
        runtime.spawn(async move {
            let Some(store) = store.upgrade() else { return };
            match store.count().await {
                Ok((ids, events)) => {
                    store.stats.ids.store(ids, Ordering::Relaxed);
                    store.stats.events.store(events, Ordering::Relaxed);
                }
                Err(err) => tracing::debug!(error = %err, "counting ids in Redis failed"),
            }
            *store
                .stats
                .refreshed
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            store.stats.refreshing.store(false, Ordering::Relaxed);
        });
    }

    async fn count(&self) -> Result<(usize, usize), StoreError> {
        // The prefix is the user's: its glob characters must match themselves.
        let mut pattern = String::with_capacity(self.config.prefix.len() + 8);
        for c in self.config.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":meta:*");
        let meta_prefix = format!("{}:meta:", self.config.prefix);
        let log_prefix = format!("{}:log:", self.config.prefix);
        let (mut cursor, mut ids, mut events) = ("0".to_owned(), 0, 0);
        loop {
            let reply = run(
                &self.client,
                &self.scripts.count,
                Vec::new(),
                vec![
                    cursor.as_str().into(),
                    pattern.as_str().into(),
                    1000.into(),
                    meta_prefix.as_str().into(),
                    log_prefix.as_str().into(),
                ],
            )
            .await?;
            let Value::Array(parts) = reply else {
                return Err(malformed("count"));
            };
            let [next, seen, kept] = parts.as_slice() else {
                return Err(malformed("count"));
            };
            ids += parse_u64(seen).unwrap_or(0) as usize;
            events += parse_u64(kept).unwrap_or(0) as usize;
            cursor = std::str::from_utf8(next.as_bytes().unwrap_or(b"0"))
                .unwrap_or("0")
                .to_owned();
            if cursor == "0" {
                return Ok((ids, events));
            }
        }
    }
}

impl Store for RedisStore {
    fn append(&self, id: &str, event: Event) -> StoreFuture<Result<Cursor, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let keys = inner.keys(id);
        let channel = format!("{}:wake:{id}", inner.config.prefix);
        StoreFuture::new(async move {
            let config = &inner.config;
            let content_type = event
                .content_type_value()
                .map(|value| Bytes::copy_from_slice(value.as_bytes()))
                .unwrap_or_default();
            let args: Vec<Value> = vec![
                Value::Bytes(event.data().clone()),
                Value::Bytes(content_type),
                (config.capacity as i64).into(),
                millis(config.event_ttl).into(),
                millis(config.id_idle_ttl).into(),
                fastrand::u64(..).to_string().into(),
                channel.into(),
                inner.node.as_str().into(),
                event
                    .status_value()
                    .map(|status| status.as_str().to_owned())
                    .unwrap_or_default()
                    .into(),
                Value::Bytes(encode_headers(event.headers_value())),
            ];
            let reply = run(&inner.client, &inner.scripts.append, keys, args).await?;
            let Value::Array(parts) = reply else {
                return Err(malformed("append"));
            };
            match parts.as_slice() {
                [epoch, seq] => Ok(Cursor::new(
                    parse_u64(epoch).ok_or_else(|| malformed("epoch"))?,
                    parse_u64(seq).ok_or_else(|| malformed("sequence"))?,
                )),
                _ => Err(malformed("append")),
            }
        })
    }

    fn read(
        &self,
        id: &str,
        from: ReadFrom,
        max_events: usize,
    ) -> StoreFuture<Result<ReadResult, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let keys = inner.keys(id);
        StoreFuture::new(async move {
            let config = &inner.config;
            let (mode, cursor_epoch, cursor_seq) = match from {
                ReadFrom::Cursor(cursor) => {
                    ("c", cursor.epoch().to_string(), cursor.seq().to_string())
                }
                ReadFrom::Delivered => ("d", String::new(), "0".to_owned()),
                ReadFrom::Start => ("s", String::new(), "0".to_owned()),
            };
            let args: Vec<Value> = vec![
                mode.into(),
                cursor_epoch.into(),
                cursor_seq.into(),
                (max_events.max(1) as i64).into(),
                millis(config.event_ttl).into(),
                millis(config.id_idle_ttl).into(),
                fastrand::u64(..).to_string().into(),
            ];
            let reply = run(&inner.client, &inner.scripts.read, keys, args).await?;
            let Value::Array(parts) = reply else {
                return Err(malformed("read"));
            };
            let [epoch, position, gap, entries] = parts.as_slice() else {
                return Err(malformed("read"));
            };
            let epoch = parse_u64(epoch).ok_or_else(|| malformed("epoch"))?;
            let position = match from {
                ReadFrom::Cursor(cursor) => cursor,
                ReadFrom::Delivered | ReadFrom::Start => Cursor::new(
                    epoch,
                    parse_u64(position).ok_or_else(|| malformed("position"))?,
                ),
            };
            let gap = parse_u64(gap) == Some(1);
            let events = match entries {
                Value::Array(entries) => entries
                    .iter()
                    .map(|entry| parse_entry(epoch, entry).ok_or_else(|| malformed("event")))
                    .collect::<Result<Vec<_>, _>>()?,
                Value::Null => Vec::new(),
                _ => return Err(malformed("events")),
            };
            Ok(ReadResult::with_events(position, events).gap(gap))
        })
    }

    fn commit(&self, id: &str, cursor: Cursor) -> StoreFuture<Result<(), StoreError>> {
        let inner = Arc::clone(&self.inner);
        let keys = inner.keys(id);
        StoreFuture::new(async move {
            let args: Vec<Value> = vec![
                cursor.epoch().to_string().into(),
                cursor.seq().to_string().into(),
                millis(inner.config.id_idle_ttl).into(),
            ];
            run(&inner.client, &inner.scripts.commit, keys, args).await?;
            Ok(())
        })
    }

    fn watch(&self, id: &str) -> StoreFuture<Result<(), StoreError>> {
        self.inner.watches.watch(id)
    }

    fn unwatch(&self, id: &str) {
        self.inner.watches.unwatch(id);
    }

    fn attach(&self, notifier: Notifier) {
        if self.inner.notifier.set(notifier).is_err() {
            tracing::warn!("a RedisStore serves one hub; it was attached twice");
        }
    }

    fn stats(&self) -> StoreStats {
        self.inner.refresh_stats_if_stale();
        StoreStats::new(
            self.inner.stats.ids.load(Ordering::Relaxed),
            self.inner.stats.events.load(Ordering::Relaxed),
            0,
        )
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.config.url)
            .field("prefix", &self.inner.config.prefix)
            .field("subscribed_ids", &self.subscribed_ids())
            .finish()
    }
}
