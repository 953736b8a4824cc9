//! A [`Store`] in Redis, shared by several nodes.
//!
//! Each id's events live in a Redis list, beside a hash holding the log's
//! epoch, its newest sequence number and the delivery position of clients
//! without a cursor; every operation is one Lua script, so it is atomic. A
//! cursor issued by one node is therefore understood by every node, and a
//! client may poll node A, then node B, and miss nothing. Sequence numbers
//! come from the Redis clock, so that they are not handed out again after
//! Redis loses acknowledged writes: a cursor from a lost history is answered
//! with the gap flag, never with a silent skip.
//!
//! A node learns of events published elsewhere through one pub/sub channel
//! per id it holds polls for: a publish wakes only the nodes that wait on
//! that id. The link is probed end to end: a heartbeat published on a
//! channel of the node's own must come back through it within
//! [`probe_interval`](RedisStoreBuilder::probe_interval), or the node
//! reconnects, subscribes again and wakes its waiters to read again.
//!
//! Every key and the channel of one id carry the hash tag `{id}`, so the
//! store runs on a Redis Cluster too (`redis-cluster://host:port?node=host:port`),
//! with sharded pub/sub; `redis-sentinel://host:port?sentinelServiceName=name`
//! follows a Sentinel-managed primary. See `docs/scaling.md` for the
//! topologies and their guarantees.
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

mod coalesce;
mod scripts;
mod watch;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, ClusterInterface, LuaInterface};
use fred::types::config::{Config as FredConfig, Options, ReconnectPolicy, UnresponsiveConfig};
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::task::JoinHandle;

use self::coalesce::{Coalescer, Role};
use self::scripts::{Script, Scripts};
use self::watch::{Mode, Watches};
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
    fred: Option<FredConfig>,
    prefix: String,
    capacity: usize,
    event_ttl: Duration,
    id_idle_ttl: Duration,
    command_timeout: Duration,
    connect_timeout: Duration,
    max_reconnect_delay: Duration,
    linger: Duration,
    stats_interval: Duration,
    probe_interval: Duration,
    idempotency_window: Duration,
    replicas: Option<(u32, Duration)>,
}

struct Inner {
    client: Client,
    subscriber: SubscriberClient,
    scripts: Scripts,
    config: RedisStoreBuilder,
    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    publish: &'static str,
    /// This node's name in wake-up messages, so it skips its own.
    node: String,
    notifier: Arc<OnceLock<Notifier>>,
    watches: Arc<Watches>,
    wakeups_received: Arc<AtomicU64>,
    coalescer: Arc<Coalescer>,
    reads_sent: AtomicU64,
    commits_sent: AtomicU64,
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
    /// A builder for a store at `url`:
    /// - `redis://[user:password@]host:port[/db]`, one Redis;
    /// - `redis-cluster://[user:password@]host:port?node=host:port&node=host:port`,
    ///   a Redis Cluster (any of its nodes; the others are discovered);
    /// - `redis-sentinel://[user:password@]host:port?sentinelServiceName=name&node=host:port`,
    ///   the primary that these Sentinels name.
    ///
    /// With the `redis-tls` feature, `rediss://` (and `rediss-cluster://`,
    /// `rediss-sentinel://`) connect with TLS (rustls, the system's root
    /// certificates; for a private CA build the config with
    /// [`builder_from_config`](RedisStore::builder_from_config)). Without
    /// it such URLs are refused when connecting, never used in plaintext.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            fred: None,
            prefix: "longpoll".to_owned(),
            capacity: 64,
            event_ttl: Duration::from_secs(5 * 60),
            id_idle_ttl: Duration::from_secs(10 * 60),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_secs(2),
            linger: Duration::from_secs(5),
            stats_interval: Duration::from_secs(10),
            probe_interval: Duration::from_secs(2),
            idempotency_window: Duration::from_secs(5 * 60),
            replicas: None,
        }
    }

    /// A builder for a store described by a `fred` client config: a single
    /// server, a cluster (`ServerConfig::Clustered`) or a Sentinel set. The
    /// store sets its own timeouts and reconnection policy on it.
    pub fn builder_from_config(config: FredConfig) -> RedisStoreBuilder {
        // A URL-like name for logs and errors.
        let scheme = if config.server.is_clustered() {
            "redis-cluster"
        } else if config.server.is_sentinel() {
            "redis-sentinel"
        } else {
            "redis"
        };
        let hosts: Vec<String> = config
            .server
            .hosts()
            .iter()
            .map(|server| format!("{}:{}", server.host, server.port))
            .collect();
        let tls = if config.uses_tls() { " (TLS)" } else { "" };
        let mut builder = Self::builder(format!("{scheme}://{}{tls}", hosts.join(",")));
        builder.fred = Some(config);
        builder
    }

    /// Connects with the default settings.
    pub async fn connect(url: impl Into<String>) -> Result<RedisStore, StoreError> {
        Self::builder(url).connect().await
    }

    /// Wake-up messages this node has received from Redis, its own included.
    pub fn wakeups_received(&self) -> u64 {
        self.inner.wakeups_received.load(Ordering::Relaxed)
    }

    /// Read scripts this node has sent to Redis: reads of one id from one
    /// position in flight together are sent once.
    pub fn reads_sent(&self) -> u64 {
        self.inner.reads_sent.load(Ordering::Relaxed)
    }

    /// Commit scripts this node has sent to Redis: the polls of an id that
    /// one event answers commit its cursor once.
    pub fn commits_sent(&self) -> u64 {
        self.inner.commits_sent.load(Ordering::Relaxed)
    }

    /// Ids whose wake-up channel this node is subscribed to now.
    pub fn subscribed_ids(&self) -> usize {
        self.inner.watches.subscribed()
    }

    /// Times this node's subscriber link was replaced: found dead by the
    /// heartbeat, or reconnected by the client (after a drop, or a command
    /// left unanswered). Each is followed by subscribing again and waking
    /// every waiter.
    pub fn link_resets(&self) -> u64 {
        self.inner.watches.resets()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key and channel (default `longpoll`); nodes that
    /// share events use the same prefix. It must not contain `{` or `}`:
    /// the id's hash tag follows it.
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

    /// How often the subscriber link is probed end to end (default 2 s): a
    /// heartbeat that does not come back through it within this long makes
    /// the node reconnect it, subscribe again and wake its waiters, so a
    /// dead link delays cross-node wake-ups by at most about twice this.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a publish's idempotency key is remembered (default 5
    /// minutes): a retry with the same key within it gets the first cursor.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }

    /// Acknowledges a publish only once `replicas` replicas of the primary
    /// that took it have it too, waiting at most `timeout` (Redis `WAIT`,
    /// sent right behind the append on the same connection). Off by
    /// default: replication is asynchronous, so a primary that dies (`kill
    /// -9`, a host lost) before its replica has the newest events takes them
    /// with it, although their publishes were acknowledged. With one
    /// replica per primary and `wait_for_replicas(1, …)`, a failover to that
    /// replica keeps every acknowledged event.
    ///
    /// A publish that the replicas do not confirm in time fails with an
    /// error although its event was appended (and may be delivered): retry
    /// it with the same idempotency key, and it is acknowledged once the
    /// replicas have it, never appended twice. Each publish then costs a
    /// round trip to a replica; see `docs/scaling.md`.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Connects, failing at once with a clear error when Redis cannot be
    /// reached. Must be called inside a tokio runtime.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let url = self.url.clone();
        let failed = |what: &str, err: fred::error::Error| {
            StoreError::Backend(format!("cannot {what} Redis at {url}: {err}").into())
        };
        if self.prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(
                format!(
                    "cannot use the key prefix {:?}: it must not contain {{ or }}",
                    self.prefix
                )
                .into(),
            ));
        }
        let mut config = match &self.fred {
            Some(config) => config.clone(),
            None => {
                let scheme = self.url.split_once("://").map_or("", |(scheme, _)| scheme);
                let tls = scheme.starts_with("rediss") || scheme.starts_with("valkeys");
                let plain = scheme
                    .replacen("rediss", "redis", 1)
                    .replacen("valkeys", "valkey", 1);
                let known = matches!(
                    plain.as_str(),
                    "redis"
                        | "redis-cluster"
                        | "redis-sentinel"
                        | "valkey"
                        | "valkey-cluster"
                        | "valkey-sentinel"
                );
                if !known || (tls && !cfg!(feature = "redis-tls")) {
                    let hint = if known {
                        "TLS needs the `redis-tls` feature, which this build lacks, and it never \
                         connects in plaintext instead"
                    } else {
                        "expected a redis://, redis-cluster:// or redis-sentinel:// URL"
                    };
                    return Err(StoreError::Backend(
                        format!("cannot use Redis at {url}: {hint}").into(),
                    ));
                }
                FredConfig::from_url(&self.url).map_err(|err| failed("use", err))?
            }
        };
        config.fail_fast = true;
        let clustered = config.server.is_clustered();
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
                    // A command unanswered this long means a dead socket
                    // (a half-open TCP connection sends no FIN).
                    connection.unresponsive = UnresponsiveConfig {
                        max_timeout: Some(self.command_timeout.max(self.probe_interval)),
                        interval: (self.probe_interval / 2).max(Duration::from_millis(5)),
                    };
                    connection.tcp.nodelay = Some(true);
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
        let mode = if clustered {
            Mode::Sharded
        } else {
            Mode::Plain
        };
        let coalescer = Arc::new(Coalescer::default());
        let (watches, tasks) = Watches::start(watch::Setup {
            subscriber: subscriber.clone(),
            client: client.clone(),
            mode,
            prefix: self.prefix.clone(),
            node: node.clone(),
            linger: self.linger,
            probe_interval: self.probe_interval,
            notifier: Arc::clone(&notifier),
            received: Arc::clone(&wakeups_received),
            coalescer: Arc::clone(&coalescer),
        });
        tracing::info!(url = %self.url, prefix = %self.prefix, clustered, "connected to Redis");
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                subscriber,
                scripts: Scripts::new(),
                config: self,
                publish: mode.publish_command(),
                node,
                notifier,
                watches,
                wakeups_received,
                coalescer,
                reads_sent: AtomicU64::new(0),
                commits_sent: AtomicU64::new(0),
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

/// Runs a script by its hash, loading it when Redis has forgotten it, and
/// with `wait` (replicas, timeout) sends `WAIT` right behind it on the same
/// connection, returning the script's reply and how many replicas confirmed.
///
/// Every script may be sent twice (an append carries an attempt token, so
/// a second send is answered with the first one's result): fred counts the
/// resend after a `MOVED` (a slot moved to another primary) as an attempt,
/// and the store allows one so that fred never resends on its own after a
/// connection drop, so the first command to a moved slot fails although
/// Redis did not run it. The store sends it once more itself.
async fn run(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
    wait: Option<(u32, Duration)>,
) -> Result<(Value, Option<u64>), StoreError> {
    let once = || async {
        let reply = match wait {
            None => send(client, script, &keys, &args, false)
                .await
                .map(|reply| (reply, None)),
            Some((replicas, timeout)) => {
                send_and_wait(client, script, &keys, &args, replicas, timeout).await
            }
        };
        match reply {
            Err(err) if err.details().contains("NOSCRIPT") => match wait {
                None => send(client, script, &keys, &args, true)
                    .await
                    .map(|reply| (reply, None)),
                Some((replicas, timeout)) => {
                    // `EVAL` loads it; the `WAIT` after it goes to the same
                    // connection, so it covers the script's writes.
                    let reply = send(client, script, &keys, &args, true).await?;
                    let confirmed = client
                        .custom::<Value, _>(wait_command(&keys), wait_args(replicas, timeout))
                        .await?;
                    Ok((reply, parse_u64(&confirmed)))
                }
            },
            other => other,
        }
    };
    match once().await {
        Err(err) if err.details().contains("failed write attempts") => {
            once().await.map_err(backend)
        }
        other => other.map_err(backend),
    }
}

/// `WAIT`, to the node that owns the keys' slot. Not a blocking command
/// for fred: other commands may queue behind it on the connection (Redis
/// answers them after it) instead of fred holding them back.
fn wait_command(keys: &[String]) -> CustomCommand {
    let slot = fred::util::redis_keyslot(keys[0].as_bytes());
    CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false)
}

fn wait_args(replicas: u32, timeout: Duration) -> Vec<Value> {
    vec![
        Value::from(i64::from(replicas)),
        Value::from(millis(timeout)),
    ]
}

/// `EVALSHA` (or `EVAL` with the source).
async fn send(
    client: &Client,
    script: &Script,
    keys: &[String],
    args: &[Value],
    source: bool,
) -> Result<Value, fred::error::Error> {
    if source {
        client
            .eval(script.source.as_str(), keys.to_vec(), args.to_vec())
            .await
    } else {
        client
            .evalsha(script.sha1.as_str(), keys.to_vec(), args.to_vec())
            .await
    }
}

/// `EVALSHA` and `WAIT` in one pipeline, to the node that owns the keys'
/// slot: `WAIT` counts the replicas that have every write made on its
/// connection so far, the script's included.
async fn send_and_wait(
    client: &Client,
    script: &Script,
    keys: &[String],
    args: &[Value],
    replicas: u32,
    timeout: Duration,
) -> Result<(Value, Option<u64>), fred::error::Error> {
    let slot = fred::util::redis_keyslot(keys[0].as_bytes());
    let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
    let mut script_args = Vec::with_capacity(2 + keys.len() + args.len());
    script_args.push(Value::from(script.sha1.as_str()));
    script_args.push(Value::from(keys.len() as i64));
    script_args.extend(keys.iter().map(|key| Value::from(key.as_str())));
    script_args.extend(args.iter().cloned());
    let pipeline = client.pipeline();
    let _: () = pipeline.custom(evalsha, script_args).await?;
    let _: () = pipeline
        .custom(wait_command(keys), wait_args(replicas, timeout))
        .await?;
    let mut replies = pipeline.try_all::<Value>().await.into_iter();
    let reply = replies.next().unwrap_or_else(|| Ok(Value::Null))?;
    let confirmed = match replies.next() {
        Some(Ok(value)) => parse_u64(&value),
        Some(Err(err)) => return Err(err),
        None => None,
    };
    Ok((reply, confirmed))
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

/// An entry of the list: `<seq>,<at>,<len t>,<len s>,<len h>;` then the
/// content type, status, headers and data (see `scripts.rs`).
fn parse_entry(epoch: u64, entry: &Value) -> Option<StoredEvent> {
    let entry = match entry {
        Value::Bytes(bytes) => bytes.clone(),
        Value::String(text) => text.inner().clone(),
        _ => return None,
    };
    let semicolon = entry.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&entry[..semicolon]).ok()?;
    let mut fields = header.split(',');
    let seq: u64 = fields.next()?.parse().ok()?;
    let _at = fields.next()?;
    let mut lengths = fields.map(|field| field.parse::<usize>().ok());
    let (t, s, h) = (lengths.next()??, lengths.next()??, lengths.next()??);
    let mut rest = entry.slice(semicolon + 1..);
    if rest.len() < t + s + h {
        return None;
    }
    let content_type = rest.split_to(t);
    let status = rest.split_to(s);
    let headers = rest.split_to(h);
    let mut event = Event::new(rest);
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
    /// The id's list, meta hash and idempotency key (for `key`), all in the
    /// id's hash slot.
    fn keys(&self, id: &str, key: Option<&str>) -> Vec<String> {
        let prefix = &self.config.prefix;
        let mut keys = vec![
            format!("{prefix}:{{{id}}}:l"),
            format!("{prefix}:{{{id}}}:m"),
        ];
        if let Some(key) = key {
            keys.push(format!("{prefix}:{{{id}}}:i:{key}"));
        }
        keys
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

    /// Counts on every primary: `SCAN` sees the keys of one node only.
    async fn count(&self) -> Result<(usize, usize), StoreError> {
        // The prefix is the user's: its glob characters must match themselves.
        let mut pattern = String::with_capacity(self.config.prefix.len() + 8);
        for c in self.config.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":{*}:m");
        if self.client.is_clustered() {
            // The cached topology may predate a failover or a replica
            // joining: a replica counted as a primary counts its keys twice.
            self.client.sync_cluster().await.map_err(backend)?;
        }
        let nodes = match self.client.cached_cluster_state() {
            Some(state) if self.client.is_clustered() => {
                state.unique_primary_nodes().into_iter().map(Some).collect()
            }
            _ => vec![None],
        };
        let (mut ids, mut events) = (0, 0);
        for node in nodes {
            let client = self.client.with_options(&Options {
                cluster_node: node,
                ..Options::default()
            });
            let mut cursor = "0".to_owned();
            loop {
                let args: Vec<Value> =
                    vec![cursor.as_str().into(), pattern.as_str().into(), 1000.into()];
                let script = &self.scripts.count;
                let reply = match client
                    .evalsha::<Value, _, _, _>(
                        script.sha1.as_str(),
                        Vec::<String>::new(),
                        args.clone(),
                    )
                    .await
                {
                    Err(err) if err.details().contains("NOSCRIPT") => client
                        .eval::<Value, _, _, _>(script.source.as_str(), Vec::<String>::new(), args)
                        .await
                        .map_err(backend)?,
                    other => other.map_err(backend)?,
                };
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
                    break;
                }
            }
        }
        Ok((ids, events))
    }

    /// Runs the read script: one Redis round trip.
    async fn read_script(
        &self,
        keys: Vec<String>,
        from: ReadFrom,
        max_events: usize,
    ) -> Result<ReadResult, StoreError> {
        self.reads_sent.fetch_add(1, Ordering::Relaxed);
        let config = &self.config;
        let (mode, cursor_epoch, cursor_seq) = match from {
            ReadFrom::Cursor(cursor) => ("c", cursor.epoch().to_string(), cursor.seq().to_string()),
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
        let (reply, _) = run(&self.client, &self.scripts.read, keys, args, None).await?;
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
    }

    fn append(
        self: Arc<Self>,
        id: &str,
        event: Event,
        idempotency_key: Option<&str>,
    ) -> StoreFuture<Result<(Cursor, bool), StoreError>> {
        // Without a key, the third key is the (unused) idempotency key of an
        // empty name: a script's keys must all be in the id's slot.
        let keys = self.keys(id, Some(idempotency_key.unwrap_or("")));
        let keyed = idempotency_key.is_some();
        // The same for every send of this append: a resend after a `MOVED`
        // or a lost reply is answered with what the first send got.
        let attempt = format!("{:016x}", fastrand::u64(..));
        let channel = format!("{}:{{{id}}}:w", self.config.prefix);
        let id = id.to_owned();
        StoreFuture::new(async move {
            let config = &self.config;
            let content_type = event
                .content_type_value()
                .map(|value| Bytes::copy_from_slice(value.as_bytes()))
                .unwrap_or_default();
            let window = if keyed {
                millis(config.idempotency_window)
            } else {
                0
            };
            let args: Vec<Value> = vec![
                Value::Bytes(event.data().clone()),
                Value::Bytes(content_type),
                (config.capacity as i64).into(),
                millis(config.event_ttl).into(),
                millis(config.id_idle_ttl).into(),
                fastrand::u64(..).to_string().into(),
                channel.into(),
                self.node.as_str().into(),
                event
                    .status_value()
                    .map(|status| status.as_str().to_owned())
                    .unwrap_or_default()
                    .into(),
                Value::Bytes(encode_headers(event.headers_value())),
                self.publish.into(),
                window.into(),
                attempt.into(),
            ];
            let wait = config.replicas;
            let (reply, confirmed) =
                run(&self.client, &self.scripts.append, keys, args, wait).await?;
            // The hub wakes this node's waiters of the id next: reads in
            // flight may predate the event.
            self.coalescer.woken(&id);
            if let (Some((replicas, timeout)), Some(confirmed)) = (wait, confirmed) {
                if confirmed < u64::from(replicas) {
                    // The event is in the log (and may be delivered) but
                    // would be lost if the primary failed now.
                    return Err(StoreError::Backend(
                        format!(
                            "the event was appended, but {confirmed} of the {replicas} \
                             replicas asked for confirmed it within {timeout:?}; retry \
                             the publish with its idempotency key"
                        )
                        .into(),
                    ));
                }
            }
            let Value::Array(parts) = reply else {
                return Err(malformed("append"));
            };
            match parts.as_slice() {
                [epoch, seq, fresh] => Ok((
                    Cursor::new(
                        parse_u64(epoch).ok_or_else(|| malformed("epoch"))?,
                        parse_u64(seq).ok_or_else(|| malformed("sequence"))?,
                    ),
                    parse_u64(fresh) == Some(1),
                )),
                _ => Err(malformed("append")),
            }
        })
    }
}

impl Store for RedisStore {
    fn append(&self, id: &str, event: Event) -> StoreFuture<Result<Cursor, StoreError>> {
        let append = Arc::clone(&self.inner).append(id, event, None);
        StoreFuture::new(async move { append.await.map(|(cursor, _)| cursor) })
    }

    fn append_once(
        &self,
        id: &str,
        key: &str,
        event: Event,
    ) -> StoreFuture<Result<(Cursor, bool), StoreError>> {
        Arc::clone(&self.inner).append(id, event, Some(key))
    }

    fn read(
        &self,
        id: &str,
        from: ReadFrom,
        max_events: usize,
    ) -> StoreFuture<Result<ReadResult, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let keys = inner.keys(id, None);
        let live = inner.watches.is_subscribed(id);
        let role = inner.coalescer.begin(id, from, max_events, live);
        StoreFuture::new(async move {
            match role {
                Role::Lead(lead) => {
                    let result = inner.read_script(keys, from, max_events).await;
                    lead.finish(&result);
                    result
                }
                Role::Join(shared) => match coalesce::joined(shared).await {
                    Some(result) => result,
                    // The read it joined was dropped: read on its own.
                    None => inner.read_script(keys, from, max_events).await,
                },
            }
        })
    }

    fn commit(&self, id: &str, cursor: Cursor) -> StoreFuture<Result<(), StoreError>> {
        let inner = Arc::clone(&self.inner);
        if !inner.coalescer.commit_needed(id, cursor) {
            return StoreFuture::ready(Ok(()));
        }
        let keys = inner.keys(id, None);
        // A read of the delivery position that starts after this commit
        // must not be served by one that started before it.
        inner.coalescer.delivered_moved(id);
        inner.commits_sent.fetch_add(1, Ordering::Relaxed);
        StoreFuture::new(async move {
            let args: Vec<Value> = vec![
                cursor.epoch().to_string().into(),
                cursor.seq().to_string().into(),
                millis(inner.config.id_idle_ttl).into(),
            ];
            run(&inner.client, &inner.scripts.commit, keys, args, None).await?;
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
