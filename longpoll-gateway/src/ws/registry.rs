//! Which sockets are subscribed to which channels (by `c:` subscribe
//! messages), for `ws-message` publishes. A publish goes into the socket
//! log (a hub of its own, in Redis beside the others when there is one);
//! each process runs one relay per channel its sockets are on, which reads
//! the log from where it joined and hands each message to those sockets: so
//! a publish to any gateway on the same Redis reaches the sockets of all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tower_longpoll::store::ReadFrom;
use tower_longpoll::{Event, Hub, PublishError, WaitLimits};

use crate::state::State;

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

/// The sockets of one channel in this process, and its relay.
struct Channel {
    subscribers: Vec<Subscriber>,
    relay: CancellationToken,
    /// Turns true once the relay knows where the log ends: publishes after
    /// that reach the channel's sockets.
    reading: watch::Receiver<bool>,
}

/// How long a subscribe waits for its channel's relay to find the log's
/// end (a store that does not answer must not hold the socket's session).
const RELAY_START: std::time::Duration = std::time::Duration::from_secs(5);

/// Channel → the sockets subscribed to it.
pub struct Sockets {
    /// The log `ws-message` publishes go through.
    pub hub: Hub,
    channels: Mutex<HashMap<Box<str>, Channel>>,
    next: AtomicU64,
    pub open: AtomicU64,
    /// Cancelled when the gateway stops: every socket closes with 1001.
    pub shutdown: CancellationToken,
    pub delivered: AtomicU64,
    pub slow: AtomicU64,
}

impl Sockets {
    pub fn new(hub: Hub) -> Sockets {
        Sockets {
            hub,
            channels: Mutex::default(),
            next: AtomicU64::default(),
            open: AtomicU64::default(),
            shutdown: CancellationToken::new(),
            delivered: AtomicU64::default(),
            slow: AtomicU64::default(),
        }
    }

    /// A new socket id.
    pub fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts a socket on a channel; the first socket of a channel in this
    /// process starts its relay. Returns once the relay reads the channel's
    /// log from a point after the socket joined, so that every message
    /// published from then on reaches the socket (the backend's
    /// subscribe-then-publish is not lost to the relay's start).
    pub async fn subscribe(state: &Arc<State>, channel: &str, subscriber: &Subscriber) {
        let mut reading = {
            let mut channels = state.sockets.lock();
            if let Some(entry) = channels.get_mut(channel) {
                if !entry.subscribers.iter().any(|s| s.id == subscriber.id) {
                    entry.subscribers.push(subscriber.clone());
                }
                entry.reading.clone()
            } else {
                let relay = state.sockets.shutdown.child_token();
                let (started, reading) = watch::channel(false);
                channels.insert(
                    channel.into(),
                    Channel {
                        subscribers: vec![subscriber.clone()],
                        relay: relay.clone(),
                        reading: reading.clone(),
                    },
                );
                tokio::spawn(run_relay(
                    Arc::clone(state),
                    channel.to_owned(),
                    relay,
                    started,
                ));
                reading
            }
        };
        // An error means the relay ended before it started reading (the
        // store failed, or shutdown): it has logged why; nothing to wait for.
        if tokio::time::timeout(RELAY_START, reading.wait_for(|started| *started))
            .await
            .is_err()
        {
            tracing::warn!(
                channel,
                "the socket log did not answer within 5 s; publishes may miss this socket until it does"
            );
        }
    }

    pub fn unsubscribe(&self, channel: &str, id: u64) {
        let mut channels = self.lock();
        if let Some(entry) = channels.get_mut(channel) {
            entry.subscribers.retain(|s| s.id != id);
            if entry.subscribers.is_empty() {
                entry.relay.cancel();
                channels.remove(channel);
            }
        }
    }

    /// Publishes a message to the sockets on `channel`, on every gateway
    /// sharing the log.
    pub async fn publish(&self, channel: &str, message: &Message) -> Result<(), PublishError> {
        self.hub.publish(channel, encode(message)).await.map(drop)
    }

    /// Hands `message` to every socket on `channel`; the number reached.
    pub fn deliver(&self, channel: &str, message: &Message) -> usize {
        let channels = self.lock();
        let Some(entry) = channels.get(channel) else {
            return 0;
        };
        let mut reached = 0;
        for subscriber in &entry.subscribers {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Events of the socket log: the message's payload, its kind in the content
/// type.
const TEXT: &str = "application/x-ws-text";
const BINARY: &str = "application/x-ws-binary";
const PING: &str = "application/x-ws-ping";
const PONG: &str = "application/x-ws-pong";
const CLOSE: &str = "application/x-ws-close";

/// The most events read to find the end of a channel's log.
const SCAN: usize = 4096;
/// The most a relay reads at once.
const BATCH: usize = 64;

fn encode(message: &Message) -> Event {
    let (kind, data) = match message {
        Message::Text(text) => (TEXT, Bytes::from(text.clone())),
        Message::Binary(data) => (BINARY, data.clone()),
        Message::Ping(data) => (PING, data.clone()),
        Message::Pong(data) => (PONG, data.clone()),
        Message::Close(frame) => {
            let code = frame.as_ref().map_or(1000, |f| u16::from(f.code));
            (CLOSE, Bytes::copy_from_slice(&code.to_be_bytes()))
        }
        Message::Frame(_) => (BINARY, Bytes::new()),
    };
    Event::new(data).content_type(HeaderValue::from_static(kind))
}

fn decode(event: &Event) -> Option<Message> {
    let data = event.data().clone();
    Some(match event.content_type_value()?.to_str().ok()? {
        TEXT => Message::Text(Utf8Bytes::try_from(data).ok()?),
        BINARY => Message::Binary(data),
        PING => Message::Ping(data),
        PONG => Message::Pong(data),
        CLOSE => Message::Close(Some(CloseFrame {
            code: CloseCode::from(u16::from_be_bytes([*data.first()?, *data.get(1)?])),
            reason: Utf8Bytes::from_static(""),
        })),
        _ => return None,
    })
}

/// Reads `channel` of the socket log from its end as it is now, says so
/// through `started`, and hands each message that follows to this process's
/// sockets on it, until the last of them leaves.
async fn run_relay(
    state: Arc<State>,
    channel: String,
    stop: CancellationToken,
    started: watch::Sender<bool>,
) {
    let hub = &state.sockets.hub;
    let read = tokio::select! {
        read = hub.store().read(&channel, ReadFrom::Start, SCAN) => read,
        () = stop.cancelled() => return,
    };
    let mut cursor = match read {
        Ok(read) => read.events().last().map_or(read.position(), |e| e.cursor),
        Err(err) => {
            tracing::warn!(channel, error = %err, "the socket log cannot be read; no publishes for this channel");
            return;
        }
    };
    // The sockets subscribed so far joined before this read: whatever is
    // published after `cursor` reaches them.
    started.send_replace(true);
    loop {
        let wait = hub.wait_for(
            [(channel.as_str(), ReadFrom::Cursor(cursor))],
            BATCH,
            WaitLimits::new(usize::MAX, usize::MAX),
        );
        let read = tokio::select! {
            read = wait => read,
            () = stop.cancelled() => return,
        };
        let read = match read {
            Ok((_, read)) => read,
            Err(err) => {
                tracing::debug!(channel, error = %err, "socket relay ended");
                return;
            }
        };
        for stored in read.events() {
            cursor = stored.cursor;
            if let Some(message) = decode(&stored.event) {
                state.sockets.deliver(&channel, &message);
            }
        }
        if read.events().is_empty() {
            cursor = read.position();
        }
    }
}
