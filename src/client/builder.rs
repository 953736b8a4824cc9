//! [`Builder`]: the settings of a [`LongPollClient`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use super::backoff::Backoff;
use super::error::{Error, ErrorKind};
use super::target::PollTarget;
use super::{LongPollClient, Shared};

/// How long a poll may take when the client knows no timeout: well past the
/// 30 s servers default to.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// What a poll may take beyond the timeout it asked for before the client
/// takes the connection for dead: the server's jitter and a slow network.
const REQUEST_GRACE: Duration = Duration::from_secs(15);
/// The default cap on one event's bytes.
const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Builds a [`LongPollClient`]; from [`LongPollClient::builder`].
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderName, HeaderValue};
/// use tower_longpoll::client::LongPollClient;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_longpoll::client::Error> {
/// let events = LongPollClient::builder("http://127.0.0.1:3000/poll/alice")
///     .server_wait(Duration::from_secs(20))
///     .request_timeout(Duration::from_secs(40))
///     .header(
///         HeaderName::from_static("authorization"),
///         HeaderValue::from_static("Bearer 42"),
///     )
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .since("9f0c1b2a3d4e5f60-17")
///     .build()?;
/// assert_eq!(events.cursor(), Some("9f0c1b2a3d4e5f60-17"));
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    url: Result<Uri, Error>,
    server_wait: Option<Duration>,
    request_timeout: Option<Duration>,
    headers: HeaderMap,
    backoff: Backoff,
    max_event_bytes: usize,
    since: Option<String>,
    #[cfg(feature = "client-http2")]
    http2_only: bool,
}

impl Builder {
    pub(crate) fn new(url: Result<Uri, Error>) -> Self {
        Builder {
            url,
            server_wait: None,
            request_timeout: None,
            headers: HeaderMap::new(),
            backoff: Backoff::default(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            since: None,
            #[cfg(feature = "client-http2")]
            http2_only: false,
        }
    }

    /// How long the server may hold each poll before its keepalive: sent as
    /// `?timeout=`, which servers cap at their own maximum (and may shorten
    /// by their jitter). By default the server's own wait applies.
    ///
    /// Set it below the timeout of any proxy or timeout layer in front of
    /// the server, so that polls end with the server's keepalive rather
    /// than that timeout's `408`.
    pub fn server_wait(mut self, wait: Duration) -> Self {
        self.server_wait = Some(wait);
        self
    }

    /// The server's wait, under the name it had before: see
    /// [`server_wait`](Builder::server_wait). It never was the client's own
    /// limit on a request, which is
    /// [`request_timeout`](Builder::request_timeout).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `server_wait` (the server's wait, `?timeout=`); the client's own limit on one poll is `request_timeout`"
    )]
    pub fn timeout(self, wait: Duration) -> Self {
        self.server_wait(wait)
    }

    /// How long the client lets one poll take before it gives up on the
    /// connection and tries again: by default the
    /// [`server_wait`](Builder::server_wait) plus 10 % and 15 s, or 120 s
    /// when none is set. It catches servers that vanished without closing
    /// the connection; keep it above the server's wait.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sends `name: value` with every poll (credentials, say). Called again
    /// with the same name, it adds another value.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The bounds of the backoff after failures in a row: the first wait is
    /// up to `min`, each next one up to twice the last, never over `max`;
    /// each is drawn from the upper half of its bound. By default 250 ms
    /// and 30 s. A longer `Retry-After` from the server wins.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            min,
            max: max.max(min),
        };
        self
    }

    /// The largest event accepted (16 MiB by default); a larger one ends
    /// the stream with [`ErrorKind::TooLarge`].
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Starts after `cursor`, as saved from [`ReceivedEvent::cursor`]
    /// (replacing any `since` in the URL). Without it, the first poll
    /// carries no cursor and gets what the server holds for a cursor-less
    /// client of the id.
    ///
    /// [`ReceivedEvent::cursor`]: super::ReceivedEvent::cursor
    pub fn since(mut self, cursor: impl Into<String>) -> Self {
        let cursor = cursor.into();
        self.since = (!cursor.is_empty()).then_some(cursor);
        self
    }

    /// Speaks HTTP/2 only: with prior knowledge over plain TCP (h2c), or
    /// whatever a TLS connector negotiates. Many polls then share one
    /// connection.
    #[cfg(feature = "client-http2")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client-http2")))]
    pub fn http2_only(mut self, enabled: bool) -> Self {
        self.http2_only = enabled;
        self
    }

    /// Builds the client, connecting over plain TCP (`http` URLs; for
    /// `https`, give a TLS connector to [`build_with_connector`]).
    ///
    /// [`build_with_connector`]: Builder::build_with_connector
    pub fn build(self) -> Result<LongPollClient, Error> {
        if let Ok(url) = &self.url {
            if url.scheme() == Some(&http::uri::Scheme::HTTPS) {
                return Err(Error::new(
                    ErrorKind::InvalidUrl,
                    format!("{url}: https needs a TLS connector, given to build_with_connector"),
                ));
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        self.build_with_connector(connector)
    }

    /// Builds the client on any hyper-util connector: a TLS one (such as
    /// `hyper-rustls`) for `https` URLs, a proxy, a Unix socket.
    pub fn build_with_connector<C>(self, connector: C) -> Result<LongPollClient, Error>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let url = self.url?;
        let (target, params) = PollTarget::new(&url, self.server_wait)?;
        let request_timeout = self.request_timeout.unwrap_or_else(|| {
            self.server_wait
                .or(params.timeout)
                .map_or(DEFAULT_REQUEST_TIMEOUT, |timeout| {
                    timeout
                        .saturating_add(timeout / 10)
                        .saturating_add(REQUEST_GRACE)
                })
        });
        #[allow(unused_mut)]
        let mut http = Client::builder(TokioExecutor::new());
        // A poll that found its pooled connection closed by a restarted
        // server is sent again on a new one.
        http.retry_canceled_requests(true)
            .pool_idle_timeout(Duration::from_secs(90));
        #[cfg(feature = "client-http2")]
        http.http2_only(self.http2_only);
        let http: Client<C, Empty<Bytes>> = http.build(connector);
        let shared = Shared {
            target,
            headers: self.headers,
            backoff: self.backoff,
            request_timeout,
            max_event_bytes: self.max_event_bytes,
            send: Box::new(move |request| http.request(request)),
        };
        Ok(LongPollClient::from_parts(
            Arc::new(shared),
            self.since.or(params.since),
        ))
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &self.url.as_ref().ok())
            .field("server_wait", &self.server_wait)
            .field("request_timeout", &self.request_timeout)
            .field("backoff", &self.backoff)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}
