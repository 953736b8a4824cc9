//! A long-poll client that does it right (feature `client`): it keeps its
//! cursor, backs off, honours `Retry-After`, surfaces gaps and loses nothing
//! when dropped.
//!
//! A [`LongPollClient`] is a [`Stream`] of [`ReceivedEvent`]s from one poll
//! URL. Each poll sends the cursor of the last event yielded as `?since=`
//! (any other query parameters of the URL are kept), so an event is never
//! skipped across reconnects, server restarts or a dropped stream:
//!
//! - `200`: an event is yielded with its bytes, content type, cursor (the
//!   `ETag`) and `gap` (`Longpoll-Gap: true`: some events were no longer
//!   kept, reload your state);
//! - `204` (the server's keepalive): the client polls again at once;
//! - `408`: a timeout layer or a proxy between the client and the long-poll
//!   layer cut the poll short (its timeout is shorter than the server's
//!   wait). Nothing is wrong with the server, so the client polls again at
//!   once rather than backing off; only when `408`s come back within a
//!   second, twice in a row or more, does it wait out the rest of that
//!   second, so that a misconfigured proxy cannot make it poll in a hot
//!   loop. Ask for a [`server_wait`](Builder::server_wait) below the
//!   proxy's timeout to get keepalives instead;
//! - connection errors, timeouts, `429` and `5xx` (`503` during a
//!   server's shutdown): the client waits and polls again, doubling its
//!   wait with every failure in a row (jittered, 250 ms up to 30 s by
//!   default), and never less than the server's `Retry-After`;
//! - any other status (`400`, `404`, `405`, …), an event over the size limit
//!   or an event without an `ETag` cannot be cured by asking again: the
//!   stream yields an [`Error`] and ends.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use tower_longpoll::client::LongPollClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_longpoll::client::Error> {
//! let mut events = LongPollClient::new("http://127.0.0.1:3000/poll/alice")?;
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     if event.gap() {
//!         println!("(some events were missed: reload)");
//!     }
//!     println!("{}: {:?}", event.cursor(), event.data());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Cancel safety
//! The client's cursor moves only when an event is yielded. Dropping a
//! pending `next()` loses nothing: the poll in flight lives in the stream
//! and the next `next()` carries on with it. Dropping the stream drops its
//! poll; an event the server had already sent on it was never yielded, so a
//! new client started [`since`](Builder::since) the old one's
//! [`cursor`](LongPollClient::cursor) gets it again. Only the very first
//! poll of a client with no cursor relies on the server's delivery position
//! for the id; give a cursor to resume exactly.
//!
//! # Runtime
//! The client runs on tokio (its timer and hyper-util's pooled client) and
//! speaks HTTP/1.1 by default; with the feature `client-http2`,
//! [`Builder::http2_only`] makes it speak HTTP/2.

mod backoff;
mod builder;
mod error;
mod event;
mod target;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_core::Stream;
use http::header::{CONTENT_TYPE, ETAG};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::ResponseFuture;

pub use self::builder::Builder;
pub use self::error::{Error, ErrorKind};
pub use self::event::ReceivedEvent;

use self::backoff::Backoff;
use self::target::PollTarget;

/// How much of a refusal's body is kept as the error's detail.
const MAX_DETAIL_BYTES: usize = 1024;

/// Polls cut short by `408` start at most this often once two in a row came
/// back sooner: a proxy that answers `408` at once must not turn the client
/// into a hot loop, and one that holds polls for less than this is not
/// holding them in any useful way.
const CUT_FLOOR: Duration = Duration::from_secs(1);

/// A stream of the events of one long-poll URL; see the [module
/// docs](self).
pub struct LongPollClient {
    shared: Arc<Shared>,
    /// The cursor of the last event yielded (or the one to start after).
    cursor: Option<String>,
    /// The polls (and waits) that will yield the next item. It lives here,
    /// not in a `next()` future, so dropping a `next()` loses nothing.
    in_flight: Option<NextEvent>,
    ended: bool,
}

/// The polls and waits that end in the next item.
type NextEvent = Pin<Box<dyn Future<Output = Result<ReceivedEvent, Error>> + Send>>;

/// What every poll of a client shares.
pub(crate) struct Shared {
    pub(crate) target: PollTarget,
    pub(crate) headers: HeaderMap,
    pub(crate) backoff: Backoff,
    pub(crate) request_timeout: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) send: Box<dyn Fn(Request<Empty<Bytes>>) -> ResponseFuture + Send + Sync>,
}

impl LongPollClient {
    /// A client for `url` with the default settings: the server's timeout,
    /// backoff from 250 ms to 30 s, events up to 16 MiB, HTTP/1.1. The
    /// URL's `since`, if any, is where it starts.
    pub fn new<U>(url: U) -> Result<LongPollClient, Error>
    where
        U: TryInto<Uri>,
        U::Error: Into<http::Error>,
    {
        Self::builder(url).build()
    }

    /// A [`Builder`] for a client of `url`.
    pub fn builder<U>(url: U) -> Builder
    where
        U: TryInto<Uri>,
        U::Error: Into<http::Error>,
    {
        let url = url.try_into().map_err(|err| {
            let err: http::Error = err.into();
            Error::new(ErrorKind::InvalidUrl, err.to_string()).with_source(err)
        });
        Builder::new(url)
    }

    pub(crate) fn from_parts(shared: Arc<Shared>, cursor: Option<String>) -> Self {
        LongPollClient {
            shared,
            cursor,
            in_flight: None,
            ended: false,
        }
    }

    /// The cursor of the last event yielded, or the one the client was told
    /// to start after: save it to resume with [`Builder::since`].
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

impl Stream for LongPollClient {
    type Item = Result<ReceivedEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let in_flight = this.in_flight.get_or_insert_with(|| {
            Box::pin(next_event(Arc::clone(&this.shared), this.cursor.clone()))
        });
        let item = ready!(in_flight.as_mut().poll(cx));
        this.in_flight = None;
        match &item {
            Ok(event) => this.cursor = Some(event.cursor.clone()),
            Err(_) => this.ended = true,
        }
        Poll::Ready(Some(item))
    }
}

impl fmt::Debug for LongPollClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongPollClient")
            .field("url", &self.shared.target.uri(None))
            .field("cursor", &self.cursor)
            .field("polling", &self.in_flight.is_some())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// What one poll came to.
enum Attempt {
    Event(ReceivedEvent),
    /// A keepalive, with the position the server holds for the client.
    KeepAlive(Option<String>),
    /// `408`: something in front of the long-poll layer (a timeout layer, a
    /// proxy) ended the poll after `held`; the position, if the answer
    /// carried one (a server whose keepalive is a `408`).
    Cut {
        held: Duration,
        position: Option<String>,
    },
    /// Worth another try, after at least `retry_after`.
    Retry {
        retry_after: Option<Duration>,
        reason: String,
    },
    Fatal(Error),
}

/// Polls until there is an event or an error retrying cannot cure.
async fn next_event(
    shared: Arc<Shared>,
    mut cursor: Option<String>,
) -> Result<ReceivedEvent, Error> {
    let mut failures = 0u32;
    // 408s in a row that came back sooner than CUT_FLOOR.
    let mut quick_cuts = 0u32;
    loop {
        match poll_once(&shared, cursor.as_deref()).await {
            Attempt::Event(event) => return Ok(event),
            Attempt::Fatal(error) => return Err(error),
            Attempt::KeepAlive(position) => {
                failures = 0;
                quick_cuts = 0;
                // A client without a cursor learns where the server has it.
                if cursor.is_none() {
                    cursor = position;
                }
            }
            Attempt::Cut { held, position } => {
                // The server answered nothing wrong: whatever cut the poll
                // short was reached, so the connection is fine.
                failures = 0;
                if cursor.is_none() {
                    cursor = position;
                }
                if held >= CUT_FLOOR {
                    quick_cuts = 0;
                    tracing::debug!(
                        held_ms = held.as_millis() as u64,
                        "the poll was cut short with 408 (a timeout layer or proxy in front of the long-poll server?); polling again"
                    );
                } else {
                    quick_cuts = quick_cuts.saturating_add(1);
                    let wait = if quick_cuts > 1 {
                        CUT_FLOOR - held
                    } else {
                        Duration::ZERO
                    };
                    tracing::debug!(
                        held_ms = held.as_millis() as u64,
                        quick_cuts,
                        wait_ms = wait.as_millis() as u64,
                        "the poll was cut short with 408 at once; polling again"
                    );
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            Attempt::Retry {
                retry_after,
                reason,
            } => {
                quick_cuts = 0;
                failures = failures.saturating_add(1);
                let wait = shared.backoff.wait(failures, retry_after);
                tracing::debug!(
                    failures,
                    wait_ms = wait.as_millis() as u64,
                    %reason,
                    "long-poll failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One poll: the request, and the body when it holds an event.
async fn poll_once(shared: &Shared, cursor: Option<&str>) -> Attempt {
    let mut request = Request::new(Empty::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = shared.target.uri(cursor);
    *request.headers_mut() = shared.headers.clone();
    let started = Instant::now();
    let exchange = async {
        let response = match (shared.send)(request).await {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Retry {
                    retry_after: None,
                    reason: error_chain(&err),
                };
            }
        };
        let (parts, body) = response.into_parts();
        match parts.status {
            StatusCode::OK => {
                let Some(cursor) = etag_cursor(&parts.headers) else {
                    return Attempt::Fatal(Error::new(
                        ErrorKind::Protocol,
                        "a 200 without an ETag holding the event's cursor",
                    ));
                };
                let data = match Limited::new(body, shared.max_event_bytes).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                        return Attempt::Fatal(Error::new(
                            ErrorKind::TooLarge,
                            format!("over {} bytes", shared.max_event_bytes),
                        ));
                    }
                    Err(err) => {
                        return Attempt::Retry {
                            retry_after: None,
                            reason: format!("the event's body broke off: {}", error_chain(&*err)),
                        };
                    }
                };
                Attempt::Event(ReceivedEvent {
                    data,
                    content_type: parts.headers.get(CONTENT_TYPE).cloned(),
                    cursor,
                    gap: parts
                        .headers
                        .get(crate::LONGPOLL_GAP)
                        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true")),
                })
            }
            StatusCode::NO_CONTENT => Attempt::KeepAlive(etag_cursor(&parts.headers)),
            StatusCode::REQUEST_TIMEOUT => {
                // Read the short explanation so the connection can be reused.
                short_text(body).await;
                Attempt::Cut {
                    held: started.elapsed(),
                    position: etag_cursor(&parts.headers),
                }
            }
            status if retryable(status) => {
                // Read the short explanation so the connection can be reused.
                let text = short_text(body).await;
                Attempt::Retry {
                    retry_after: backoff::retry_after(&parts.headers, SystemTime::now()),
                    reason: format!("{status}: {text}"),
                }
            }
            status => {
                let text = short_text(body).await;
                Attempt::Fatal(Error::new(ErrorKind::Status(status), text))
            }
        }
    };
    match tokio::time::timeout(shared.request_timeout, exchange).await {
        Ok(attempt) => attempt,
        Err(_) => Attempt::Retry {
            retry_after: None,
            reason: format!(
                "no answer in {:?}: the connection is taken for dead",
                started.elapsed()
            ),
        },
    }
}

/// Statuses that another try, later, may cure (`408` is not among them: it
/// is no failure, see [`Attempt::Cut`]).
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The cursor in an `ETag`: `"<cursor>"` or `W/"<cursor>"`.
fn etag_cursor(headers: &HeaderMap) -> Option<String> {
    let etag = headers.get(ETAG)?.to_str().ok()?.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    let cursor = etag.strip_prefix('"')?.strip_suffix('"')?;
    (!cursor.is_empty()).then(|| cursor.to_owned())
}

/// The start of a refusal's body, as text.
async fn short_text<B>(body: B) -> String
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_DETAIL_BYTES).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    }
}

/// An error and its sources on one line: hyper-util's own messages are terse.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cursors_come_from_strong_and_weak_etags() {
        let mut headers = HeaderMap::new();
        assert_eq!(etag_cursor(&headers), None);
        headers.insert(ETAG, HeaderValue::from_static("\"00ff-3\""));
        assert_eq!(etag_cursor(&headers).as_deref(), Some("00ff-3"));
        headers.insert(ETAG, HeaderValue::from_static("W/\"00ff-4\""));
        assert_eq!(etag_cursor(&headers).as_deref(), Some("00ff-4"));
        headers.insert(ETAG, HeaderValue::from_static("00ff-5"));
        assert_eq!(etag_cursor(&headers), None);
        headers.insert(ETAG, HeaderValue::from_static("\"\""));
        assert_eq!(etag_cursor(&headers), None);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for status in [429, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        // 408 is polled again without a backoff; the others end the stream.
        for status in [301, 304, 400, 401, 403, 404, 405, 408, 413] {
            assert!(
                !retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn bad_urls_are_errors_not_panics() {
        let err = LongPollClient::new("http://exa mple/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        let err = LongPollClient::new("https://example.com/poll").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert!(err.to_string().contains("TLS connector"), "{err}");
    }
}
