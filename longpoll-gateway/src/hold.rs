//! GRIP holds: wait on the hold's channels, answer with the first published
//! response or, on timeout, with the upstream's own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::ext::ReasonPhrase;
use tower_longpoll::store::ReadFrom;
use tower_longpoll::{DeliveryBody, Hub, StoredEvent, WaitError, WaitLimits};

use crate::grip::{Hold, Whole};
use crate::reply::{ProxyBody, full, text, unavailable};
use crate::state::{State, add};

/// How a hold ended.
pub enum Outcome {
    /// Answer the client with this.
    Respond(Response<ProxyBody>),
    /// A `prev-id` is behind: send the request again with these `Grip-Last`
    /// values.
    Retry(Vec<HeaderValue>),
}

/// Holds a request on the channels of `hold`.
///
/// Each channel is waited on from where its client is: after the event
/// published with the hold's `prev-id` when that is the channel's last id;
/// otherwise after the channel's delivery position, so that an event
/// published while nobody was held is answered at once. A `prev-id` that is
/// not the channel's last id means the client is behind: when `may_retry`,
/// the caller asks the upstream again with `Grip-Last`.
pub async fn hold(state: &Arc<State>, hold: Hold, may_retry: bool) -> Outcome {
    let mut behind = Vec::new();
    let mut from = Vec::with_capacity(hold.channels.len());
    for channel in &hold.channels {
        let last = state.channels.last(&channel.name);
        let start = match (&channel.prev_id, last) {
            (Some(prev_id), Some(last)) => match &last.id {
                Some(last_id) if **last_id == **prev_id => ReadFrom::Cursor(last.cursor),
                Some(last_id) => {
                    if let Ok(value) =
                        HeaderValue::try_from(format!("{}; last-id={last_id}", channel.name))
                    {
                        behind.push(value);
                    }
                    ReadFrom::Cursor(last.cursor)
                }
                None => ReadFrom::Delivered,
            },
            _ => ReadFrom::Delivered,
        };
        from.push(start);
    }
    if !behind.is_empty() && may_retry {
        return Outcome::Retry(behind);
    }

    let config = &state.config;
    let timeout = hold.lasts(
        config.grip_timeout,
        config.grip_timeout_min,
        config.grip_timeout_max,
    );
    let limits = WaitLimits::new(config.max_waiters, config.max_waiters);
    let names: Vec<&str> = hold.channels.iter().map(|c| c.name.as_str()).collect();
    let wait = state
        .hub
        .wait_for(names.iter().copied().zip(from), 1, limits);
    add(&state.metrics.holds);
    let mut guard = Held::new(state, hold.gone);
    tracing::debug!(channels = ?names, timeout = ?timeout, "GRIP hold");
    let outcome = tokio::time::timeout(timeout, wait).await;
    guard.finish();
    let metrics = &state.metrics;
    let response = match outcome {
        Ok(Ok((index, read))) => {
            add(&metrics.hold_events);
            let stored = &read.events()[0];
            tracing::debug!(channel = names[index], cursor = %stored.cursor, "GRIP hold released by a publish");
            event_response(&state.hub, names[index], stored).await
        }
        Err(_elapsed) => {
            add(&metrics.hold_timeouts);
            whole_response(hold.response)
        }
        Ok(Err(WaitError::ShuttingDown)) => {
            add(&metrics.hold_shed);
            unavailable("the gateway is shutting down; retry, possibly elsewhere")
        }
        Ok(Err(WaitError::InvalidId(err))) => {
            add(&metrics.bad_instructions);
            tracing::warn!(error = %err, "the upstream named an invalid channel");
            text(
                StatusCode::BAD_GATEWAY,
                &format!("the upstream named an invalid channel: {err}"),
            )
        }
        Ok(Err(err)) => {
            add(&metrics.hold_refused);
            tracing::warn!(error = %err, "GRIP hold refused");
            unavailable(&format!("the request cannot be held now: {err}"))
        }
    };
    Outcome::Respond(response)
}

/// A response kept whole (the upstream's, for the timeout), with its reason
/// phrase on HTTP/1.
pub fn whole_response(whole: Whole) -> Response<ProxyBody> {
    let mut response = Response::new(full(whole.body));
    *response.status_mut() = whole.status;
    *response.headers_mut() = whole.headers;
    if let Some(reason) = whole.reason {
        if let Ok(reason) = ReasonPhrase::try_from(Bytes::from(reason)) {
            response.extensions_mut().insert(reason);
        }
    }
    response
}

/// The published response: status, headers and body of the event; its
/// delivery is committed when the body is handed to the connection, or now
/// when the connection will not poll the body (an event without bytes).
async fn event_response(hub: &Hub, channel: &str, stored: &StoredEvent) -> Response<ProxyBody> {
    let event = &stored.event;
    let mut body = DeliveryBody::new(hub, channel, stored);
    if event.data().is_empty() {
        body.commit().await;
    }
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = event.status_value().unwrap_or(StatusCode::OK);
    if let Some(headers) = event.headers_value() {
        *response.headers_mut() = headers.clone();
    }
    if let Some(content_type) = event.content_type_value() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, content_type.clone());
    }
    crate::items::apply_reason(&mut response);
    response
}

/// A hold in progress: counts in the `holding` gauge, and tells the
/// upstream (`Grip-Link; rel=gone`) when dropped before it finished, which
/// is what hyper does when the client disconnects.
struct Held {
    state: Arc<State>,
    gone: Option<String>,
    finished: bool,
}

impl Held {
    fn new(state: &Arc<State>, gone: Option<String>) -> Self {
        state.metrics.holding.fetch_add(1, Ordering::Relaxed);
        Held {
            state: Arc::clone(state),
            gone,
            finished: false,
        }
    }

    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.state.metrics.holding.fetch_sub(1, Ordering::Relaxed);
        if self.finished {
            return;
        }
        tracing::debug!("held client went away");
        let Some(link) = self.gone.take() else {
            return;
        };
        crate::gone::notify(&self.state, link);
    }
}
