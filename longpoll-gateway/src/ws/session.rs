//! One socket's life: client messages become events POSTed to the backend
//! (one request at a time, events that come meanwhile go in the next), the
//! backend's answers and publishes go to the client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::events::{Event, Kind};
use super::registry::{QUEUE, Subscriber};
use super::{Answer, Backend};
use crate::state::State;

/// A deadline that never comes.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest message a client may send.
const MAX_MESSAGE: usize = 1024 * 1024;

type Posting = Pin<Box<dyn Future<Output = (Backend, Result<Answer, String>)> + Send>>;

/// What the socket does after an event of the backend's.
#[derive(PartialEq, Eq)]
enum Next {
    Go,
    /// The backend said `DISCONNECT`: drop the connection.
    Drop,
}

struct Socket {
    sink: futures_util::stream::SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>,
    state: Arc<State>,
    me: Subscriber,
    grip: bool,
    channels: Vec<String>,
    /// `detach`: client messages no longer go to the backend.
    detached: bool,
    /// A `keep-alive` control: what to send, and how often.
    keep_alive: Option<(Message, Duration)>,
    /// The client can no longer be written to.
    gone: bool,
}

pub async fn run(
    state: Arc<State>,
    backend: Backend,
    upgraded: Upgraded,
    id: u64,
    grip: bool,
    first: Vec<Event>,
    keep_alive_interval: Option<u64>,
) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, mut stream) = socket.split();
    let (queue, mut queued) = mpsc::channel(QUEUE);
    let too_slow = CancellationToken::new();
    let mut socket = Socket {
        sink,
        state: Arc::clone(&state),
        me: Subscriber {
            id,
            queue,
            too_slow: too_slow.clone(),
        },
        grip,
        channels: Vec::new(),
        detached: false,
        keep_alive: None,
        gone: false,
    };
    state
        .sockets
        .open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let shutdown = state.sockets.shutdown.clone();

    let mut backend = Some(backend);
    let mut posting: Option<Posting> = None;
    let mut pending: Vec<Event> = Vec::new();
    let mut client_done = false;
    let mut client_closed = false;
    let mut dropped = false;
    for event in first {
        if socket.apply(event).await == Next::Drop {
            dropped = true;
        }
    }
    let mut interval = keep_alive_interval
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let mut backend_tick = tokio::time::Instant::now() + interval.unwrap_or(FAR);
    let mut client_tick = tokio::time::Instant::now() + FAR;

    while !dropped {
        if posting.is_none() && !pending.is_empty() {
            if let Some(mut owned) = backend.take() {
                let events = std::mem::take(&mut pending);
                posting = Some(Box::pin(async move {
                    let answer = owned.post(&events).await;
                    (owned, answer)
                }));
                if let Some(every) = interval {
                    backend_tick = tokio::time::Instant::now() + every;
                }
            }
        }
        if client_done && posting.is_none() && pending.is_empty() {
            break;
        }
        tokio::select! {
            message = stream.next(), if !client_done => match message {
                Some(Ok(Message::Text(text))) if !socket.detached => {
                    pending.push(Event::new(Kind::Text, Bytes::from(text)));
                }
                Some(Ok(Message::Binary(bytes))) if !socket.detached => {
                    pending.push(Event::new(Kind::Binary, bytes));
                }
                Some(Ok(Message::Close(frame))) => {
                    client_closed = true;
                    if !socket.detached {
                        let code = frame.map_or(1005, |frame| u16::from(frame.code));
                        pending.push(Event::close(code));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "WebSocket client connection failed");
                    if matches!(err, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                        // A message over the limit: 1009, Message Too Big.
                        socket.close(1009).await;
                    }
                    client_done = true;
                    if !client_closed && !socket.detached {
                        pending.push(Event::new(Kind::Disconnect, Bytes::new()));
                    }
                }
                None => {
                    client_done = true;
                    if !client_closed && !socket.detached {
                        pending.push(Event::new(Kind::Disconnect, Bytes::new()));
                    }
                }
            },
            (owned, answer) = async { posting.as_mut().expect("guarded").await }, if posting.is_some() => {
                posting = None;
                backend = Some(owned);
                match answer {
                    Ok(answer) if answer.status != http::StatusCode::OK => {
                        tracing::warn!(status = %answer.status, "WebSocket-over-HTTP: the upstream refused an event; closing the socket");
                        socket.close(1011).await;
                        break;
                    }
                    Ok(answer) => {
                        if let Some(every) = answer.keep_alive.filter(|s| *s > 0) {
                            let every = Duration::from_secs(every);
                            interval = Some(every);
                            backend_tick = tokio::time::Instant::now() + every;
                        }
                        for event in answer.events {
                            if socket.apply(event).await == Next::Drop {
                                dropped = true;
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "WebSocket-over-HTTP: the upstream failed; closing the socket");
                        socket.close(1011).await;
                        break;
                    }
                }
            }
            Some(message) = queued.recv() => {
                let closing = matches!(message, Message::Close(_));
                socket.send(message).await;
                if closing {
                    client_done = client_done || socket.gone;
                }
            }
            () = too_slow.cancelled() => {
                tracing::debug!("WebSocket client too slow for its publishes; closed");
                socket.close(1008).await;
                break;
            }
            () = shutdown.cancelled() => {
                socket.close(1001).await;
                break;
            }
            () = tokio::time::sleep_until(backend_tick), if interval.is_some() && posting.is_none() => {
                // Keep-Alive-Interval: an empty POST, so the backend hears
                // from the socket.
                if let (Some(every), Some(mut owned)) = (interval, backend.take()) {
                    backend_tick = tokio::time::Instant::now() + every;
                    posting = Some(Box::pin(async move {
                        let answer = owned.post(&[]).await;
                        (owned, answer)
                    }));
                }
            }
            () = tokio::time::sleep_until(client_tick), if socket.keep_alive.is_some() => {
                if let Some((message, every)) = socket.keep_alive.clone() {
                    client_tick = tokio::time::Instant::now() + every;
                    socket.send(message).await;
                }
            }
        }
        if let Some((_, every)) = &socket.keep_alive {
            if client_tick > tokio::time::Instant::now() + *every {
                client_tick = tokio::time::Instant::now() + *every;
            }
        }
        if socket.gone {
            client_done = true;
        }
    }
    for channel in std::mem::take(&mut socket.channels) {
        state.sockets.unsubscribe(&channel, id);
    }
    state
        .sockets
        .open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

impl Socket {
    async fn send(&mut self, message: Message) {
        if self.gone {
            return;
        }
        if self.sink.send(message).await.is_err() {
            self.gone = true;
        }
    }

    async fn close(&mut self, code: u16) {
        self.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(""),
        })))
        .await;
    }

    /// Carries out one event of the backend's.
    async fn apply(&mut self, event: Event) -> Next {
        let content = event.content;
        match event.kind {
            Kind::Text => {
                let content = if self.grip {
                    if let Some(control) = content.strip_prefix(b"c:") {
                        self.control(control).await;
                        return Next::Go;
                    }
                    match content.strip_prefix(b"m:") {
                        Some(_) => content.slice(2..),
                        None => content,
                    }
                } else {
                    content
                };
                match Utf8Bytes::try_from(content) {
                    Ok(text) => self.send(Message::Text(text)).await,
                    Err(_) => tracing::warn!("WebSocket-over-HTTP: a TEXT event not in UTF-8"),
                }
            }
            Kind::Binary => {
                let content = if self.grip && content.starts_with(b"m:") {
                    content.slice(2..)
                } else {
                    content
                };
                self.send(Message::Binary(content)).await;
            }
            Kind::Ping => self.send(Message::Ping(content)).await,
            Kind::Pong => self.send(Message::Pong(content)).await,
            Kind::Close => {
                let code = Event {
                    kind: Kind::Close,
                    content,
                }
                .close_code()
                .unwrap_or(1000);
                self.close(code).await;
            }
            Kind::Disconnect => return Next::Drop,
            Kind::Open => {}
        }
        Next::Go
    }

    /// A `c:` message of the grip extension.
    async fn control(&mut self, json: &[u8]) {
        let Ok(Value::Object(control)) = serde_json::from_slice::<Value>(json) else {
            tracing::warn!("WebSocket-over-HTTP: a control message that is not a JSON object");
            return;
        };
        let channel = control.get("channel").and_then(Value::as_str);
        match control.get("type").and_then(Value::as_str) {
            Some("subscribe") => {
                if let Some(channel) = channel {
                    super::Sockets::subscribe(&self.state, channel, &self.me).await;
                    if !self.channels.iter().any(|c| c == channel) {
                        self.channels.push(channel.to_owned());
                    }
                }
            }
            Some("unsubscribe") => {
                if let Some(channel) = channel {
                    self.state.sockets.unsubscribe(channel, self.me.id);
                    self.channels.retain(|c| c != channel);
                }
            }
            Some("detach") => self.detached = true,
            Some("keep-alive") => {
                let content = control.get("content").and_then(Value::as_str).unwrap_or("");
                let timeout = control.get("timeout").and_then(Value::as_u64).unwrap_or(0);
                self.keep_alive = (timeout > 0).then(|| {
                    let message =
                        if control.get("message-type").and_then(Value::as_str) == Some("ping") {
                            Message::Ping(Bytes::copy_from_slice(content.as_bytes()))
                        } else {
                            Message::text(content)
                        };
                    (message, Duration::from_secs(timeout))
                });
            }
            Some("close") => {
                let code = control
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(1000);
                self.close(code).await;
            }
            other => tracing::debug!(kind = ?other, "WebSocket-over-HTTP: control message ignored"),
        }
    }
}
