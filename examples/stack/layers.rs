//! The tower-http layers of the stack example, configured for an app that
//! long-polls: what each does to polls is in `docs/axum.md`. The tests
//! include this file to check them in-process.

use std::time::Duration;

use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{
    DefaultMakeSpan, DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse,
    OnFailure, OnResponse, TraceLayer,
};
use tower_longpoll::{LAST_EVENT_ID, LONGPOLL_GAP};
use tracing::Span;

/// `TraceLayer` as the stack sets it up.
pub(crate) type Trace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    DefaultMakeSpan,
    DefaultOnRequest,
    PollAwareOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    PollAwareOnFailure,
>;

/// tower-http's HTTP tracing, with two changes for long-polls:
///
/// - a keepalive (`204` with an `ETag`) is logged as such, its latency
///   named for what it is: how long the poll waited, not how slow the
///   server was. (So is an event's: the wait for it.)
/// - a `503` is not logged as an error. The layer answers `503` to every
///   parked poll when the server shuts down, and to polls over a limit,
///   each with `Retry-After`: one error line per client at every deploy says
///   nothing. The crate logs the shutdown itself (info), and a store that
///   fails (warn). Other `5xx` stay errors.
pub(crate) fn trace() -> Trace {
    TraceLayer::new_for_http()
        .on_response(PollAwareOnResponse)
        .on_failure(PollAwareOnFailure)
}

/// See [`trace`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollAwareOnResponse;

impl<B> OnResponse<B> for PollAwareOnResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        let keepalive = response.status() == StatusCode::NO_CONTENT
            && response.headers().contains_key(header::ETAG);
        if keepalive {
            tracing::debug!(
                parent: span,
                waited_ms = latency.as_millis() as u64,
                "long-poll keepalive"
            );
        } else {
            DefaultOnResponse::new().on_response(response, latency, span);
        }
    }
}

/// See [`trace`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollAwareOnFailure;

impl OnFailure<ServerErrorsFailureClass> for PollAwareOnFailure {
    fn on_failure(&mut self, class: ServerErrorsFailureClass, latency: Duration, span: &Span) {
        let latency_ms = latency.as_millis() as u64;
        match class {
            ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
                tracing::debug!(
                    parent: span,
                    status = 503,
                    latency_ms,
                    "503: the client is to retry later (shutdown, a limit, the store)"
                );
            }
            ServerErrorsFailureClass::StatusCode(status) => {
                tracing::error!(parent: span, status = status.as_u16(), latency_ms, "response failed");
            }
            ServerErrorsFailureClass::Error(error) => {
                tracing::error!(parent: span, %error, latency_ms, "response failed");
            }
        }
    }
}

/// Compression of responses, events included: it goes outside the
/// long-poll layer so that events are compressed (keepalives have no body).
pub(crate) fn compression() -> CompressionLayer {
    CompressionLayer::new()
}

/// A timeout for the app's own routes, never for polls: it goes inside the
/// long-poll layer. (Outside it, it would answer every poll that waits
/// longer with `408`.)
pub(crate) fn timeout(after: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, after)
}

/// CORS for a page on `origin`, outermost but for tracing: it answers
/// preflights before they reach the long-poll layer (which allows only
/// `GET` and `HEAD`) or an authentication layer (browsers send no
/// credentials with a preflight), and its headers are on refusals too.
pub(crate) fn cors(origin: HeaderValue) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::HEAD, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            LAST_EVENT_ID,
        ])
        .expose_headers([header::ETAG, header::RETRY_AFTER, LONGPOLL_GAP])
        .max_age(Duration::from_secs(600))
}
