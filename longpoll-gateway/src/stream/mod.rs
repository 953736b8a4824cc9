//! GRIP stream mode: `Grip-Hold: stream`.
//!
//! The upstream's response goes to the client at once (status, headers,
//! body) and the response stays open; every `http-stream` item published on
//! one of its channels is appended to it, until an item closes it, its next
//! link ends it, the client goes away, or the gateway shuts down.
//!
//! Items are kept in a log per channel in a hub of their own (the *stream
//! log*: in memory, or in Redis beside the response holds' logs), so that:
//! - each stream reads the log from its own cursor per channel (one wait on
//!   the hub for all its channels, then write, then advance), and nothing
//!   published after the upstream answered is skipped or sent twice;
//! - a stream held with `prev-id` starts right after that item when the log
//!   still has it: a client that reconnects gets exactly what it missed,
//!   from this gateway or any other sharing the Redis log;
//! - an item published through one gateway reaches the streams of all.
//!
//! A stream runs as a task of its own (a [`session`]) that writes into a
//! bounded [`outbox`]; hyper takes from it as the client reads. Next links
//! ([`link`]), keep-alives, filters ([`filter`]) and meta ([`instruct`])
//! behave as in Pushpin.

pub mod filter;
pub mod instruct;
mod link;
mod outbox;
mod session;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tower_longpoll::{Hub, PublishError};

use crate::grip;
use crate::http_stream::StreamItem;
use crate::reply::{ProxyBody, unavailable};
use crate::state::{State, add};

pub use self::link::Origin;

/// The streams of this gateway: their log, limits and counters.
pub struct Streams {
    /// The stream log: `http-stream` items by channel.
    pub hub: Hub,
    /// Cancelled when the gateway stops: every stream ends cleanly.
    pub stop: CancellationToken,
    limits: Limits,
    open: AtomicUsize,
    per_channel: Mutex<HashMap<Box<str>, usize>>,
    pub metrics: StreamMetrics,
}

/// What bounds streams.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most streams open at once.
    pub streams: usize,
    /// Most streams open at once on one channel.
    pub per_channel: usize,
    /// Most bytes written to a stream and not yet read by its client.
    pub buffer: usize,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct StreamMetrics {
    pub started: AtomicU64,
    pub refused: AtomicU64,
    pub published: AtomicU64,
    pub items: AtomicU64,
    pub filtered: AtomicU64,
    pub keep_alives: AtomicU64,
    pub next_links: AtomicU64,
    pub next_link_failures: AtomicU64,
    pub recoveries: AtomicU64,
    pub gaps: AtomicU64,
    pub closed: AtomicU64,
    pub slow_readers: AtomicU64,
    pub gone: AtomicU64,
    pub shed: AtomicU64,
    pub errors: AtomicU64,
}

impl Streams {
    pub fn new(hub: Hub, limits: Limits) -> Streams {
        Streams {
            hub,
            stop: CancellationToken::new(),
            limits,
            open: AtomicUsize::new(0),
            per_channel: Mutex::default(),
            metrics: StreamMetrics::default(),
        }
    }

    /// Ends every stream cleanly and refuses new ones.
    pub fn shutdown(&self) {
        self.hub.shutdown();
        self.stop.cancel();
    }

    /// Appends an item to its channel's stream log: every stream on the
    /// channel, on any gateway sharing the log, gets it.
    pub async fn publish(&self, channel: &str, item: &StreamItem) -> Result<(), PublishError> {
        self.hub.publish(channel, item.to_event()).await?;
        add(&self.metrics.published);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, usize>> {
        self.per_channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for a stream on `channels`, within the limits.
    fn admit(state: &Arc<State>, channels: &[&str]) -> Result<Admission, String> {
        let streams = &state.streams;
        let open = streams.open.fetch_add(1, Ordering::Relaxed);
        if open >= streams.limits.streams {
            streams.open.fetch_sub(1, Ordering::Relaxed);
            return Err(format!(
                "the gateway holds {open} streams, its limit (--max-streams)"
            ));
        }
        // From here, dropping the admission gives the place back.
        let mut admission = Admission {
            state: Arc::clone(state),
            channels: Vec::new(),
        };
        let mut map = streams.lock();
        let full = channels
            .iter()
            .find(|name| map.get(**name).copied().unwrap_or(0) >= streams.limits.per_channel);
        if let Some(full) = full {
            drop(map);
            return Err(format!(
                "channel {full:?} has as many streams as it may (--max-streams-per-channel)"
            ));
        }
        for name in channels {
            *map.entry((*name).into()).or_default() += 1;
            admission.channels.push((*name).into());
        }
        drop(map);
        Ok(admission)
    }

    /// Prometheus text for the streams.
    pub fn render_metrics(&self, out: &mut String) {
        let m = &self.metrics;
        let stats = self.hub.stats();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        metric(
            "longpoll_gateway_grip_streams_total",
            "counter",
            "GRIP streams started (Grip-Hold: stream, or a response continued by its next link).",
            get(&m.started),
        );
        metric(
            "longpoll_gateway_grip_streaming",
            "gauge",
            "GRIP streams open now.",
            self.open.load(Ordering::Relaxed) as u64,
        );
        metric(
            "longpoll_gateway_grip_stream_refused_total",
            "counter",
            "GRIP streams refused by --max-streams or --max-streams-per-channel (503).",
            get(&m.refused),
        );
        metric(
            "longpoll_gateway_published_stream_items_total",
            "counter",
            "http-stream items published (kept in the stream log).",
            get(&m.published),
        );
        metric(
            "longpoll_gateway_grip_stream_items_total",
            "counter",
            "http-stream items written to streams (one per stream).",
            get(&m.items),
        );
        metric(
            "longpoll_gateway_grip_stream_filtered_total",
            "counter",
            "http-stream items a stream did not send: dropped by its channel's filters, or a filter failed.",
            get(&m.filtered),
        );
        metric(
            "longpoll_gateway_grip_stream_keepalives_total",
            "counter",
            "Grip-Keep-Alive data written to streams.",
            get(&m.keep_alives),
        );
        metric(
            "longpoll_gateway_grip_stream_next_links_total",
            "counter",
            "Grip-Link rel=next requests sent to the upstream.",
            get(&m.next_links),
        );
        metric(
            "longpoll_gateway_grip_stream_next_link_failures_total",
            "counter",
            "Grip-Link rel=next requests that failed (retried, at most 5 times).",
            get(&m.next_link_failures),
        );
        metric(
            "longpoll_gateway_grip_stream_recoveries_total",
            "counter",
            "Streams whose prev-id the log could not follow, recovered through their next link with Grip-Last.",
            get(&m.recoveries),
        );
        metric(
            "longpoll_gateway_grip_stream_gaps_total",
            "counter",
            "Streams that found items gone from the stream log before they read them.",
            get(&m.gaps),
        );
        metric(
            "longpoll_gateway_grip_stream_closed_total",
            "counter",
            "Streams ended cleanly: a close action, or a next link that ended them.",
            get(&m.closed),
        );
        metric(
            "longpoll_gateway_grip_stream_slow_readers_total",
            "counter",
            "Streams aborted because their client did not read (over --stream-buffer).",
            get(&m.slow_readers),
        );
        metric(
            "longpoll_gateway_grip_stream_gone_total",
            "counter",
            "Streams whose client went away.",
            get(&m.gone),
        );
        metric(
            "longpoll_gateway_grip_stream_shed_total",
            "counter",
            "Streams ended cleanly by the gateway's shutdown.",
            get(&m.shed),
        );
        metric(
            "longpoll_gateway_grip_stream_errors_total",
            "counter",
            "Streams ended by an error: a failed next link, a filter on the upstream's body, the store.",
            get(&m.errors),
        );
        metric(
            "longpoll_gateway_stream_waiters",
            "gauge",
            "Waiters parked on the stream log now: one per channel of each idle stream.",
            stats.parked as u64,
        );
        metric(
            "longpoll_gateway_stream_kept_events",
            "gauge",
            "http-stream items kept in the stream log.",
            stats.kept_events as u64,
        );
        metric(
            "longpoll_gateway_stream_kept_bytes",
            "gauge",
            "Bytes of http-stream items kept in the stream log.",
            stats.kept_bytes as u64,
        );
    }
}

/// A stream's place within the limits, given back when dropped.
struct Admission {
    state: Arc<State>,
    channels: Vec<Box<str>>,
}

impl Admission {
    /// The stream is now on `channels` (after a next link): counted there,
    /// without refusing it.
    fn move_to(&mut self, channels: &[&str]) {
        let streams = &self.state.streams;
        let mut map = streams.lock();
        for name in self.channels.drain(..) {
            leave(&mut map, &name);
        }
        for name in channels {
            *map.entry((*name).into()).or_default() += 1;
            self.channels.push((*name).into());
        }
    }
}

fn leave(map: &mut HashMap<Box<str>, usize>, name: &str) {
    if let Some(count) = map.get_mut(name) {
        *count -= 1;
        if *count == 0 {
            map.remove(name);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let streams = &self.state.streams;
        streams.open.fetch_sub(1, Ordering::Relaxed);
        let mut map = streams.lock();
        for name in &self.channels {
            leave(&mut map, name);
        }
    }
}

/// Answers with the stream's head at once and starts its session; `503`
/// when the limits are reached. The first body is `upstream_body` as it
/// arrives (the header form), or else the instruction's own.
pub async fn start(
    state: &Arc<State>,
    mut stream: grip::Stream,
    upstream_body: Option<Incoming>,
    origin: Origin,
) -> Response<ProxyBody> {
    if state.streams.stop.is_cancelled() {
        add(&state.streams.metrics.refused);
        return unavailable("the gateway is shutting down; retry, possibly elsewhere");
    }
    let names: Vec<&str> = stream.channels.iter().map(|c| c.name.as_str()).collect();
    let admission = match Streams::admit(state, &names) {
        Ok(admission) => admission,
        Err(message) => {
            add(&state.streams.metrics.refused);
            tracing::warn!(reason = message, "GRIP stream refused");
            return unavailable(&format!("the stream cannot be held now: {message}"));
        }
    };
    add(&state.streams.metrics.started);
    tracing::debug!(channels = ?names, held = stream.held, "GRIP stream");
    let (outbox, body) = outbox::outbox(state.streams.limits.buffer);
    let head = grip::Whole {
        status: stream.response.status,
        reason: stream.response.reason.take(),
        headers: std::mem::take(&mut stream.response.headers),
        body: bytes::Bytes::new(),
    };
    let first = match upstream_body {
        Some(body) => session::First::Upstream(body),
        None => session::First::Bytes(std::mem::take(&mut stream.response.body)),
    };
    session::Session::begin(Arc::clone(state), stream, admission, outbox, origin, first).await;
    crate::hold::whole_response(head).map(|_| body.boxed_unsync())
}
