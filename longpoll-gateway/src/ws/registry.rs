//! Which sockets are subscribed to which channels (by `c:` subscribe
//! messages), for `ws-message` publishes. In this process only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Messages a socket may have waiting for its client; a client further
/// behind is disconnected.
pub const QUEUE: usize = 256;

/// A socket as publishes reach it.
#[derive(Clone)]
pub struct Subscriber {
    pub id: u64,
    pub queue: mpsc::Sender<Message>,
    /// Cancelled when the client falls more than [`QUEUE`] messages behind.
    pub too_slow: CancellationToken,
}

/// Channel → the sockets subscribed to it.
#[derive(Default)]
pub struct Sockets {
    channels: Mutex<HashMap<Box<str>, Vec<Subscriber>>>,
    next: AtomicU64,
    pub open: AtomicU64,
    /// Cancelled when the gateway stops: every socket closes with 1001.
    pub shutdown: CancellationToken,
    pub delivered: AtomicU64,
    pub slow: AtomicU64,
}

impl Sockets {
    /// A new socket id.
    pub fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn subscribe(&self, channel: &str, subscriber: &Subscriber) {
        let mut channels = self.lock();
        let list = channels.entry(channel.into()).or_default();
        if !list.iter().any(|s| s.id == subscriber.id) {
            list.push(subscriber.clone());
        }
    }

    pub fn unsubscribe(&self, channel: &str, id: u64) {
        let mut channels = self.lock();
        if let Some(list) = channels.get_mut(channel) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                channels.remove(channel);
            }
        }
    }

    /// Hands `message` to every socket on `channel`; the number reached.
    pub fn deliver(&self, channel: &str, message: &Message) -> usize {
        let channels = self.lock();
        let Some(list) = channels.get(channel) else {
            return 0;
        };
        let mut reached = 0;
        for subscriber in list {
            match subscriber.queue.try_send(message.clone()) {
                Ok(()) => reached += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.slow.fetch_add(1, Ordering::Relaxed);
                    subscriber.too_slow.cancel();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.delivered.fetch_add(reached as u64, Ordering::Relaxed);
        reached
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Subscriber>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
