//! Cross-node wake-ups: one pub/sub subscription per id this node holds
//! polls for, and a heartbeat that proves the subscriber link alive.
//!
//! A publish to an id wakes only the nodes subscribed to that id's channel,
//! so an id nobody polls costs no node anything. Subscriptions linger a few
//! seconds after the last local waiter leaves, because a client that got an
//! event polls again at once; that saves an UNSUBSCRIBE/SUBSCRIBE pair per
//! event. Every SUBSCRIBE and UNSUBSCRIBE goes through one task, in the order
//! the refcounts changed, so an UNSUBSCRIBE can never overtake the SUBSCRIBE
//! of a waiter that came back.
//!
//! On a Redis Cluster the channels are sharded (`SSUBSCRIBE`/`SPUBLISH`):
//! each lives in its id's slot and is served by the shard that owns it, so
//! a publish does not cross the cluster bus to every node.
//!
//! A socket can die without a FIN (a NAT or a load balancer forgetting the
//! flow, a peer that froze): the subscriber then hears nothing, and nothing
//! tells it so. Every probe interval the node publishes a heartbeat on a
//! channel of its own (one per primary on a cluster) and expects it back
//! through the subscriber link; when it does not come, or Redis says nobody
//! listens, the link is reconnected, every channel subscribed again (retried
//! until it works) and every waiter woken to read its log again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface};
use fred::types::Value;
use fred::types::config::Options;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::coalesce::Coalescer;
use crate::store::{Notifier, StoreError, StoreFuture};

/// Plain pub/sub on one Redis, sharded pub/sub on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Plain,
    Sharded,
}

impl Mode {
    pub(super) fn publish_command(self) -> &'static str {
        match self {
            Mode::Plain => "PUBLISH",
            Mode::Sharded => "SPUBLISH",
        }
    }
}

/// The state of one id's subscription on this node.
struct Entry {
    waiters: usize,
    lingering_since: Option<Instant>,
    /// `None` while subscribing, then whether it worked.
    subscribed: watch::Receiver<Option<bool>>,
}

enum Op {
    Subscribe(String, watch::Sender<Option<bool>>),
    Unsubscribe(String),
    Barrier(oneshot::Sender<()>),
}

pub(super) struct Watches {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    ops: mpsc::UnboundedSender<Op>,
    prefix: String,
    linger: Duration,
    /// The heartbeat channels this node listens on.
    heartbeats: Mutex<Vec<String>>,
    resets: AtomicU64,
    coalescer: Arc<Coalescer>,
}

/// What [`Watches::start`] needs.
pub(super) struct Setup {
    pub(super) subscriber: SubscriberClient,
    pub(super) client: Client,
    pub(super) mode: Mode,
    pub(super) prefix: String,
    pub(super) node: String,
    pub(super) linger: Duration,
    pub(super) probe_interval: Duration,
    pub(super) notifier: Arc<OnceLock<Notifier>>,
    pub(super) received: Arc<AtomicU64>,
    pub(super) coalescer: Arc<Coalescer>,
}

impl Watches {
    /// Starts the subscription task, the linger sweep, the message listener,
    /// the reconnect handler and the heartbeat.
    pub(super) fn start(setup: Setup) -> (Arc<Watches>, Vec<JoinHandle<()>>) {
        let (ops, queue) = mpsc::unbounded_channel();
        let watches = Arc::new(Watches {
            entries: Mutex::default(),
            ops,
            prefix: setup.prefix.clone(),
            linger: setup.linger,
            heartbeats: Mutex::default(),
            resets: AtomicU64::new(0),
            coalescer: Arc::clone(&setup.coalescer),
        });
        let (beats, beats_seen) = watch::channel(0);
        let link = Link {
            subscriber: setup.subscriber.clone(),
            watches: Arc::downgrade(&watches),
            notifier: Arc::clone(&setup.notifier),
            coalescer: Arc::clone(&setup.coalescer),
        };
        let tasks = vec![
            tokio::spawn(run_ops(setup.subscriber.clone(), setup.mode, queue)),
            tokio::spawn(sweep(Arc::downgrade(&watches))),
            tokio::spawn(listen(
                setup.subscriber.clone(),
                setup.prefix.clone(),
                setup.node.clone(),
                Arc::clone(&setup.notifier),
                setup.received,
                beats,
                setup.coalescer,
            )),
            tokio::spawn(on_reconnect(link.clone())),
            tokio::spawn(heartbeat(
                link,
                setup.client,
                setup.mode,
                format!("{}:hb:{}", setup.prefix, setup.node),
                setup.probe_interval,
                beats_seen,
            )),
        ];
        (watches, tasks)
    }

    fn channel(&self, id: &str) -> String {
        format!("{}:{{{id}}}:w", self.prefix)
    }

    pub(super) fn watch(&self, id: &str) -> StoreFuture<Result<(), StoreError>> {
        let mut subscribed = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let needs_subscribe = match entries.get(id) {
                None => true,
                // A failed subscription is tried again by the next waiter.
                Some(entry) => *entry.subscribed.borrow() == Some(false),
            };
            if needs_subscribe {
                let (tx, rx) = watch::channel(None);
                let waiters = entries.get(id).map_or(0, |entry| entry.waiters);
                entries.insert(
                    Arc::from(id),
                    Entry {
                        waiters,
                        lingering_since: None,
                        subscribed: rx,
                    },
                );
                let _ = self.ops.send(Op::Subscribe(self.channel(id), tx));
            }
            let entry = entries.get_mut(id).expect("inserted above");
            entry.waiters += 1;
            entry.lingering_since = None;
            entry.subscribed.clone()
        };
        if *subscribed.borrow() == Some(true) {
            return StoreFuture::ready(Ok(()));
        }
        StoreFuture::new(async move {
            match subscribed.wait_for(Option::is_some).await.map(|done| *done) {
                Ok(Some(true)) => Ok(()),
                _ => Err(StoreError::Backend(
                    "could not subscribe to the id's wake-up channel".into(),
                )),
            }
        })
    }

    pub(super) fn unwatch(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(id) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.waiters == 0 {
                entry.lingering_since = Some(Instant::now());
            }
        }
    }

    /// Whether wake-ups of `id` reach this node now.
    pub(super) fn is_subscribed(&self, id: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(id)
            .is_some_and(|entry| *entry.subscribed.borrow() == Some(true))
    }

    /// Ids subscribed now (including lingering ones).
    pub(super) fn subscribed(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Times the link was found dead and reconnected.
    pub(super) fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    fn unsubscribe_lingering(&self) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|id, entry| {
            let expired = entry
                .lingering_since
                .is_some_and(|since| now.duration_since(since) >= self.linger);
            if expired {
                // Queued under the lock: ordered before any later SUBSCRIBE.
                let _ = self.ops.send(Op::Unsubscribe(self.channel(id)));
                // Wake-ups stop: a read kept for others may go stale unseen.
                self.coalescer.woken(id);
            }
            !expired
        });
    }

    /// Subscribes again to every id this node holds and to its heartbeat
    /// channels; returns whether every subscription worked.
    async fn resubscribe_all(&self) -> bool {
        let mut results = Vec::new();
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            for (id, entry) in entries.iter_mut() {
                let (tx, rx) = watch::channel(None);
                entry.subscribed = rx.clone();
                results.push(rx);
                let _ = self.ops.send(Op::Subscribe(self.channel(id), tx));
            }
            for channel in self
                .heartbeats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                let (tx, rx) = watch::channel(None);
                results.push(rx);
                let _ = self.ops.send(Op::Subscribe(channel.clone(), tx));
            }
        }
        let (done, wait) = oneshot::channel();
        let _ = self.ops.send(Op::Barrier(done));
        let _ = wait.await;
        results.iter().all(|result| *result.borrow() == Some(true))
    }

    async fn subscribe_one(&self, channel: String) -> bool {
        let (tx, mut rx) = watch::channel(None);
        let _ = self.ops.send(Op::Subscribe(channel, tx));
        matches!(
            rx.wait_for(Option::is_some).await.map(|r| *r),
            Ok(Some(true))
        )
    }
}

/// Runs subscription changes one batch at a time, in order; consecutive
/// operations of one kind go to Redis as one command (one per slot on a
/// cluster).
async fn run_ops(subscriber: SubscriberClient, mode: Mode, mut queue: mpsc::UnboundedReceiver<Op>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 1024).await > 0 {
        let mut ops = batch.drain(..).peekable();
        while let Some(op) = ops.next() {
            match op {
                Op::Subscribe(channel, done) => {
                    let mut channels = vec![channel];
                    let mut senders = vec![done];
                    while let Some(Op::Subscribe(..)) = ops.peek() {
                        if let Some(Op::Subscribe(channel, done)) = ops.next() {
                            channels.push(channel);
                            senders.push(done);
                        }
                    }
                    let ok = match subscribe_in_force(&subscriber, mode, channels).await {
                        Ok(()) => true,
                        Err(err) => {
                            tracing::warn!(error = %err, "subscribing to wake-up channels failed");
                            false
                        }
                    };
                    for sender in senders {
                        let _ = sender.send(Some(ok));
                    }
                }
                Op::Unsubscribe(channel) => {
                    let mut channels = vec![channel];
                    while let Some(Op::Unsubscribe(_)) = ops.peek() {
                        if let Some(Op::Unsubscribe(channel)) = ops.next() {
                            channels.push(channel);
                        }
                    }
                    let result = match mode {
                        Mode::Plain => subscriber.unsubscribe(channels).await,
                        Mode::Sharded => {
                            let mut result = Ok(());
                            for (_, group) in by_slot(channels) {
                                result = result.and(subscriber.sunsubscribe(group).await);
                            }
                            result
                        }
                    };
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "unsubscribing from wake-up channels failed");
                    }
                }
                Op::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

fn by_slot(channels: Vec<String>) -> HashMap<u16, Vec<String>> {
    let mut groups: HashMap<u16, Vec<String>> = HashMap::new();
    for channel in channels {
        groups
            .entry(fred::util::redis_keyslot(channel.as_bytes()))
            .or_default()
            .push(channel);
    }
    groups
}

/// Subscribes, and returns only once Redis has run the SUBSCRIBE.
///
/// fred finishes `subscribe` before Redis has run the command (it drops
/// Redis's confirmations as pub/sub traffic), so a PUBLISH sent right after
/// it can still find nobody subscribed. A waiter reads its log after its
/// watch is done, so a publish landing between that read and the SUBSCRIBE
/// would wake nobody. Redis answers one connection's commands in order, so
/// the reply to a PING sent behind the SUBSCRIBE means the subscription is
/// in force. On a cluster that PING must go to the node that owns the
/// channel's slot: fred sends a plain PING to any node.
async fn subscribe_in_force(
    subscriber: &SubscriberClient,
    mode: Mode,
    channels: Vec<String>,
) -> Result<(), fred::error::Error> {
    match mode {
        Mode::Plain => {
            subscriber.subscribe(channels).await?;
            let _: Value = subscriber.ping(None).await?;
        }
        Mode::Sharded => {
            let mut servers = Vec::new();
            for (slot, group) in by_slot(channels) {
                subscriber.ssubscribe(group).await?;
                let server = subscriber
                    .cached_cluster_state()
                    .and_then(|state| state.get_server(slot).cloned());
                if !servers.contains(&server) {
                    servers.push(server);
                }
            }
            for server in servers {
                let node = subscriber.with_options(&Options {
                    cluster_node: server,
                    ..Options::default()
                });
                let _: Value = node.ping(None).await?;
            }
        }
    }
    Ok(())
}

async fn sweep(watches: Weak<Watches>) {
    let period = match watches.upgrade() {
        Some(watches) => (watches.linger / 2).max(Duration::from_millis(50)),
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(watches) = watches.upgrade() else {
            return;
        };
        watches.unsubscribe_lingering();
    }
}

async fn listen(
    subscriber: SubscriberClient,
    prefix: String,
    node: String,
    notifier: Arc<OnceLock<Notifier>>,
    received: Arc<AtomicU64>,
    beats: watch::Sender<u64>,
    coalescer: Arc<Coalescer>,
) {
    let id_prefix = format!("{prefix}:{{");
    let heartbeat_prefix = format!("{prefix}:hb:{{{node}");
    let mut messages = subscriber.message_rx();
    loop {
        match messages.recv().await {
            Ok(message) => {
                if message.channel.starts_with(heartbeat_prefix.as_str()) {
                    if let Some(beat) = message
                        .value
                        .as_bytes()
                        .and_then(|token| std::str::from_utf8(token).ok()?.parse::<u64>().ok())
                    {
                        beats.send_if_modified(|seen| {
                            let newer = beat > *seen;
                            *seen = (*seen).max(beat);
                            newer
                        });
                    }
                    continue;
                }
                received.fetch_add(1, Ordering::Relaxed);
                // This node woke its own waiters when it published.
                if message.value.as_bytes() == Some(node.as_bytes()) {
                    continue;
                }
                let Some(id) = message
                    .channel
                    .strip_prefix(id_prefix.as_str())
                    .and_then(|rest| rest.strip_suffix("}:w"))
                else {
                    continue;
                };
                coalescer.woken(id);
                if let Some(notifier) = notifier.get() {
                    notifier.notify(id);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "wake-up messages were dropped; waking every waiter");
                coalescer.all_woken();
                if let Some(notifier) = notifier.get() {
                    notifier.notify_all();
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What the reconnect handler and the heartbeat share.
#[derive(Clone)]
struct Link {
    subscriber: SubscriberClient,
    watches: Weak<Watches>,
    notifier: Arc<OnceLock<Notifier>>,
    coalescer: Arc<Coalescer>,
}

impl Link {
    /// After a reconnect the node may have missed wake-ups: subscribe again
    /// (until it works), then let every waiter read its log again.
    async fn recover(&self) -> Option<()> {
        let mut pause = Duration::from_millis(50);
        loop {
            let watches = self.watches.upgrade()?;
            if watches.resubscribe_all().await {
                break;
            }
            drop(watches);
            tracing::warn!(?pause, "subscribing again failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        self.coalescer.all_woken();
        if let Some(notifier) = self.notifier.get() {
            notifier.notify_all();
        }
        Some(())
    }

    /// The link is dead or lost its subscriptions: reconnect and recover.
    async fn reset(&self, why: &str, timeout: Duration) -> Option<()> {
        let watches = self.watches.upgrade()?;
        watches.resets.fetch_add(1, Ordering::Relaxed);
        drop(watches);
        tracing::warn!(
            why,
            "the Redis subscriber link failed its probe; reconnecting it"
        );
        match tokio::time::timeout(timeout, self.subscriber.force_reconnection()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "reconnecting the subscriber failed"),
            Err(_) => tracing::warn!("reconnecting the subscriber timed out"),
        }
        self.recover().await
    }
}

async fn on_reconnect(link: Link) {
    let mut reconnects = link.subscriber.reconnect_rx();
    loop {
        match reconnects.recv().await {
            // Missed reconnect notices are still reconnects.
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        if let Some(watches) = link.watches.upgrade() {
            watches.resets.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!("reconnected to Redis; subscribing again and waking every waiter");
        if link.recover().await.is_none() {
            return;
        }
    }
}

/// Which primary serves which slots, as the client last saw it.
fn slot_map(client: &Client) -> Vec<(u16, u16, String)> {
    client
        .cached_cluster_state()
        .map(|state| {
            state
                .slots()
                .iter()
                .map(|range| (range.start, range.end, range.primary.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The node's heartbeat channels: one, or on a cluster one in a slot of each
/// primary, since each primary has its own subscriber connection.
fn heartbeat_channels(client: &Client, mode: Mode, base: &str) -> Vec<String> {
    let primaries = match (mode, client.cached_cluster_state()) {
        (Mode::Sharded, Some(state)) => state.unique_primary_nodes(),
        _ => return vec![format!("{base}}}")],
    };
    let state = client.cached_cluster_state();
    let mut channels = Vec::with_capacity(primaries.len());
    let mut covered = Vec::with_capacity(primaries.len());
    for n in 0..10_000 {
        if covered.len() == primaries.len() {
            break;
        }
        let channel = format!("{base}-{n}}}");
        let slot = fred::util::redis_keyslot(channel.as_bytes());
        let owner = state
            .as_ref()
            .and_then(|state| state.get_server(slot).cloned());
        if let Some(owner) = owner {
            if !covered.contains(&owner) {
                covered.push(owner);
                channels.push(channel);
            }
        }
    }
    channels
}

async fn heartbeat(
    link: Link,
    client: Client,
    mode: Mode,
    channel_base: String,
    interval: Duration,
    mut beats_seen: watch::Receiver<u64>,
) {
    // `{` opens the hash tag, so that each channel has a slot of its own.
    let base = channel_base.replacen(":hb:", ":hb:{", 1);
    let mut token = 0u64;
    let mut slots = slot_map(&client);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if mode == Mode::Sharded {
            // A slot moved to another primary (resharding, a failover)
            // takes its sharded subscriptions with it: Redis drops them.
            // Nothing else would tell a node that only listens.
            if client.sync_cluster().await.is_ok() {
                let now = slot_map(&client);
                if now != slots {
                    slots = now;
                    tracing::info!("the Cluster's slots moved; subscribing again");
                    let _ = link.subscriber.sync_cluster().await;
                    if link.recover().await.is_none() {
                        return;
                    }
                }
            }
        }
        let channels = heartbeat_channels(&client, mode, &base);
        let changed = {
            let Some(watches) = link.watches.upgrade() else {
                return;
            };
            let mut known = watches.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
            let fresh: Vec<_> = channels
                .iter()
                .filter(|channel| !known.contains(channel))
                .cloned()
                .collect();
            // A primary gone from the topology: its channel is not needed.
            for gone in known.iter().filter(|channel| !channels.contains(channel)) {
                let _ = watches.ops.send(Op::Unsubscribe(gone.clone()));
            }
            *known = channels.clone();
            fresh
        };
        for channel in changed {
            let Some(watches) = link.watches.upgrade() else {
                return;
            };
            watches.subscribe_one(channel).await;
        }
        for channel in &channels {
            token += 1;
            let published: Result<i64, _> = match mode {
                Mode::Plain => client.publish(channel.as_str(), token.to_string()).await,
                Mode::Sharded => client.spublish(channel.as_str(), token.to_string()).await,
            };
            let failure = match published {
                // Redis is unreachable from the publishing side too; the
                // clients reconnect by themselves and recover then.
                Err(_) => None,
                Ok(0) => Some("Redis reports nobody subscribed to the heartbeat"),
                Ok(_) => {
                    let back =
                        tokio::time::timeout(interval, beats_seen.wait_for(|seen| *seen >= token))
                            .await;
                    match back {
                        Ok(Ok(_)) => None,
                        Ok(Err(_)) => return,
                        Err(_) => Some("the heartbeat did not come back within the probe interval"),
                    }
                }
            };
            if let Some(why) = failure {
                if link.reset(why, interval).await.is_none() {
                    return;
                }
                break;
            }
        }
    }
}
