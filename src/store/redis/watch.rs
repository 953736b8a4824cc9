//! Cross-node wake-ups: one pub/sub subscription per id this node holds
//! polls for.
//!
//! A publish to an id wakes only the nodes subscribed to that id's channel,
//! so an id nobody polls costs no node anything. Subscriptions linger a few
//! seconds after the last local waiter leaves, because a client that got an
//! event polls again at once; that saves an UNSUBSCRIBE/SUBSCRIBE pair per
//! event. Every SUBSCRIBE and UNSUBSCRIBE goes through one task, in the order
//! the refcounts changed, so an UNSUBSCRIBE can never overtake the SUBSCRIBE
//! of a waiter that came back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::{Notifier, StoreError, StoreFuture};

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
    channel_prefix: String,
    linger: Duration,
}

impl Watches {
    /// Starts the subscription task, the linger sweep, the message listener
    /// and the reconnect handler.
    pub(super) fn start(
        subscriber: SubscriberClient,
        channel_prefix: String,
        node: String,
        linger: Duration,
        notifier: Arc<OnceLock<Notifier>>,
        received: Arc<std::sync::atomic::AtomicU64>,
    ) -> (Arc<Watches>, Vec<JoinHandle<()>>) {
        let (ops, queue) = mpsc::unbounded_channel();
        let watches = Arc::new(Watches {
            entries: Mutex::default(),
            ops,
            channel_prefix: channel_prefix.clone(),
            linger,
        });
        let tasks = vec![
            tokio::spawn(run_ops(subscriber.clone(), queue)),
            tokio::spawn(sweep(Arc::downgrade(&watches))),
            tokio::spawn(listen(
                subscriber.clone(),
                channel_prefix,
                node,
                Arc::clone(&notifier),
                received,
            )),
            tokio::spawn(on_reconnect(subscriber, Arc::downgrade(&watches), notifier)),
        ];
        (watches, tasks)
    }

    fn channel(&self, id: &str) -> String {
        format!("{}{id}", self.channel_prefix)
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

    /// Ids subscribed now (including lingering ones).
    pub(super) fn subscribed(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
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
            }
            !expired
        });
    }

    /// Subscribes again to every id this node holds, then returns once done.
    async fn resubscribe_all(&self) {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            for (id, entry) in entries.iter_mut() {
                let (tx, rx) = watch::channel(None);
                entry.subscribed = rx;
                let _ = self
                    .ops
                    .send(Op::Subscribe(format!("{}{id}", self.channel_prefix), tx));
            }
        }
        let (done, wait) = oneshot::channel();
        let _ = self.ops.send(Op::Barrier(done));
        let _ = wait.await;
    }
}

/// Runs subscription changes one batch at a time, in order; consecutive
/// operations of one kind go to Redis as one command.
async fn run_ops(subscriber: SubscriberClient, mut queue: mpsc::UnboundedReceiver<Op>) {
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
                    let ok = match subscribe_in_force(&subscriber, channels).await {
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
                    if let Err(err) = subscriber.unsubscribe(channels).await {
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

/// Subscribes, and returns only once Redis has run the SUBSCRIBE.
///
/// fred finishes `subscribe` before Redis has run the command (it drops
/// Redis's confirmations as pub/sub traffic), so a PUBLISH sent right after
/// it can still find nobody subscribed. A waiter reads its log after its
/// watch is done, so a publish landing between that read and the SUBSCRIBE
/// would wake nobody. Redis answers one connection's commands in order, so
/// the reply to a PING sent behind the SUBSCRIBE means the subscription is
/// in force.
async fn subscribe_in_force(
    subscriber: &SubscriberClient,
    channels: Vec<String>,
) -> Result<(), fred::error::Error> {
    subscriber.subscribe(channels).await?;
    let _: fred::types::Value = subscriber.ping(None).await?;
    Ok(())
}

async fn sweep(watches: std::sync::Weak<Watches>) {
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
    channel_prefix: String,
    node: String,
    notifier: Arc<OnceLock<Notifier>>,
    received: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut messages = subscriber.message_rx();
    loop {
        match messages.recv().await {
            Ok(message) => {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // This node woke its own waiters when it published.
                if message.value.as_bytes() == Some(node.as_bytes()) {
                    continue;
                }
                let Some(id) = message.channel.strip_prefix(channel_prefix.as_str()) else {
                    continue;
                };
                if let Some(notifier) = notifier.get() {
                    notifier.notify(id);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "wake-up messages were dropped; waking every waiter");
                if let Some(notifier) = notifier.get() {
                    notifier.notify_all();
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// After a reconnect the node may have missed wake-ups: subscribe again,
/// then let every waiter read its log again.
async fn on_reconnect(
    subscriber: SubscriberClient,
    watches: std::sync::Weak<Watches>,
    notifier: Arc<OnceLock<Notifier>>,
) {
    let mut reconnects = subscriber.reconnect_rx();
    while reconnects.recv().await.is_ok() {
        let Some(watches) = watches.upgrade() else {
            return;
        };
        tracing::info!("reconnected to Redis; subscribing again and waking every waiter");
        watches.resubscribe_all().await;
        if let Some(notifier) = notifier.get() {
            notifier.notify_all();
        }
    }
}
