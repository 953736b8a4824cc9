//! The demo's routes: the page, its long-poll client, publishing, metrics
//! and the long-poll layer. The binary serves them; the browser and client
//! tests include this file to serve the very same app in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_longpoll::browser::LongPollJs;
use tower_longpoll::store::StoreError;
use tower_longpoll::{Event, Hub, LONGPOLL_GAP, LongPollLayer, PublishError};

/// The largest body `POST /publish/{client}` accepts.
const MAX_PUBLISH_BYTES: usize = 1024 * 1024;

/// How the long-poll layer is set up.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// How long a poll waits for an event before the keepalive (204).
    pub(crate) timeout: Duration,
    /// Most polls parked at once on one client id.
    pub(crate) max_per_id: usize,
    /// Most polls parked at once in all.
    pub(crate) max_waiters: usize,
    /// The largest `Retry-After` sent with `429` and `503`.
    pub(crate) retry_after: Duration,
    /// Serve the routes through the long-poll layer (false: the same routes
    /// without it, to measure what the layer costs the requests it passes on).
    pub(crate) layer: bool,
    /// When set, `POST /publish/{client}` needs `Authorization: Bearer <token>`.
    pub(crate) publish_token: Option<String>,
    /// How long a publish body may take to arrive (`408` after).
    pub(crate) body_timeout: Duration,
    /// Origins whose pages may poll and publish (CORS); `*` for any.
    /// Empty: no CORS headers, and browsers keep other origins out.
    pub(crate) allow_origins: Vec<HeaderValue>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            max_per_id: 8,
            max_waiters: 100_000,
            retry_after: Duration::from_secs(5),
            layer: true,
            publish_token: None,
            body_timeout: Duration::from_secs(10),
            allow_origins: Vec::new(),
        }
    }
}

/// `GET /poll/{client}` (long-polls), `POST /publish/{client}`, `GET
/// /metrics`, `GET /` (the page) and `GET /longpoll.js`, on `hub`, as one
/// axum `Router`, with CORS outermost when origins are allowed: how the
/// tests serve the app in-process, and the binary with `--allow-origin`.
/// Without CORS, the binary puts the same layer around [`routes`] instead
/// (see `main.rs`).
#[allow(dead_code)]
pub(crate) fn router(hub: Hub, options: &Options) -> Router {
    let mut routes = routes(hub.clone(), options);
    if options.layer {
        routes = routes.layer(longpoll(hub, options));
    }
    match cors(&options.allow_origins) {
        Some(cors) => routes
            .layer(cors)
            .layer(axum::middleware::map_response(only_for_allowed_origins)),
        None => routes,
    }
}

/// tower-http's `CorsLayer` adds `Access-Control-Allow-Credentials`,
/// `-Expose-Headers` and a preflight's `-Allow-Methods`, `-Allow-Headers`
/// and `-Max-Age` whatever the origin, and only leaves out
/// `Access-Control-Allow-Origin` for an origin it does not allow. Browsers
/// need the latter, so that is safe; still, an origin that is not allowed
/// (or a request without `Origin`) is told nothing about CORS here.
async fn only_for_allowed_origins(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
    }
    response
}

/// CORS for pages on the `origins` given, or `None` when there are none.
///
/// It goes outside every other layer: a preflight (`OPTIONS`) is answered
/// here, before it could reach the long-poll layer (which answers `405` to
/// anything but `GET` and `HEAD`), and refusals carry the headers too, so
/// that the page can read them. The request headers a poll or a publish may
/// carry are allowed; the response headers a client must read are exposed.
/// Named origins may send credentials (cookies, HTTP auth); `*` cannot,
/// browsers refuse credentials for any-origin answers.
pub(crate) fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::HEAD, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::ETAG, header::RETRY_AFTER, LONGPOLL_GAP])
        // Browsers cap it (Chromium at 2 hours); a page that polls with
        // headers of its own sends one preflight per 10 minutes.
        .max_age(Duration::from_secs(600));
    Some(if origins.iter().any(|origin| origin == "*") {
        layer.allow_origin(Any)
    } else {
        layer
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_credentials(true)
    })
}

/// An origin as `--allow-origin` takes it: `*`, or `scheme://host[:port]`
/// exactly as browsers send it in `Origin` (no path, no trailing `/`).
#[allow(dead_code)]
pub(crate) fn parse_origin(text: &str) -> Result<HeaderValue, String> {
    if text == "*" {
        return Ok(HeaderValue::from_static("*"));
    }
    let Some((scheme, host)) = text.split_once("://") else {
        return Err(format!(
            "{text:?} is not an origin: expected scheme://host[:port] or *"
        ));
    };
    let valid_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let valid_host = !host.is_empty()
        && !host.contains(['/', '?', '#', '@', ' '])
        && host.parse::<axum::http::uri::Authority>().is_ok();
    if !valid_scheme || !valid_host {
        return Err(format!(
            "{text:?} is not an origin: expected scheme://host[:port] (no path, no trailing /) or *"
        ));
    }
    HeaderValue::from_str(text).map_err(|_| format!("{text:?} is not a valid header value"))
}

/// The long-poll layer of the app.
pub(crate) fn longpoll(hub: Hub, options: &Options) -> LongPollLayer {
    LongPollLayer::builder(hub)
        .route("/poll/{client}")
        .timeout(options.timeout)
        .max_per_id(options.max_per_id)
        .max_parked(options.max_waiters)
        .retry_after(options.retry_after)
        .batching(64)
        .build()
}

/// Every route but the long-polls.
pub(crate) fn routes(hub: Hub, options: &Options) -> Router {
    Router::new()
        .route("/", get(index))
        .route_service("/longpoll.js", LongPollJs::new())
        .route("/publish/{client}", post(publish))
        .route("/metrics", get(metrics))
        .with_state(Demo {
            hub,
            publish_token: options.publish_token.clone().map(Arc::from),
            body_timeout: options.body_timeout,
        })
}

/// What the handlers share.
#[derive(Clone)]
struct Demo {
    hub: Hub,
    publish_token: Option<Arc<str>>,
    body_timeout: Duration,
}

/// Whether the request carries the publish token, compared in constant time.
fn authorized(demo: &Demo, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = &demo.publish_token else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

/// `POST /publish/{client}`: the body becomes an event for the client, with
/// the request's content type.
async fn publish(
    State(demo): State<Demo>,
    Path(client): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if !authorized(&demo, &parts.headers) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "publishing needs Authorization: Bearer <the publish token>".into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    // A retry with the same key (after a timeout or a lost reply) publishes
    // nothing new and gets the first cursor.
    let key = parts
        .headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_owned);
    // The request head shares hyper's read buffer: let it go before waiting,
    // so that the connection reads its next request into the same buffer
    // rather than a new one.
    drop(parts);
    let hub = &demo.hub;
    let data =
        match tokio::time::timeout(demo.body_timeout, to_bytes(body, MAX_PUBLISH_BYTES)).await {
            Ok(Ok(data)) => data,
            Ok(Err(_)) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("an event is at most {MAX_PUBLISH_BYTES} bytes"),
                );
            }
            Err(_) => {
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} s",
                        demo.body_timeout.as_secs_f64()
                    ),
                );
            }
        };
    let mut event = Event::new(data);
    if let Some(content_type) = content_type {
        event = event.content_type(content_type);
    }
    let published = match key {
        Some(key) => hub.publish_idempotent(&client, key, event).await,
        None => hub.publish(&client, event).await,
    };
    match published {
        Ok(cursor) => {
            let etag = HeaderValue::try_from(format!("\"{cursor}\"")).expect("cursors are ASCII");
            (
                StatusCode::ACCEPTED,
                [
                    (header::ETAG, etag),
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                ],
                format!("{{\"cursor\":\"{cursor}\"}}\n"),
            )
                .into_response()
        }
        Err(
            err @ (PublishError::InvalidId(_)
            | PublishError::InvalidContentType
            | PublishError::InvalidStatus(_)),
        ) => text(StatusCode::BAD_REQUEST, err.to_string()),
        Err(err @ PublishError::TooLarge { .. }) => {
            text(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
        }
        Err(err @ PublishError::Store(StoreError::Full { .. } | StoreError::TooManyIds { .. })) => {
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, err.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5));
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "publish failed");
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, err.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
            response
        }
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// Connections the server closed because a client stopped reading its
/// response for longer than `--write-timeout`: the sign, seen from outside,
/// that the write guard works.
pub(crate) static STALLED_WRITES: AtomicU64 = AtomicU64::new(0);

/// Prometheus text exposition of the hub's stats.
async fn metrics(State(demo): State<Demo>) -> impl IntoResponse {
    let stats = demo.hub.stats();
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "longpoll_waiters",
        "gauge",
        "Polls parked now, waiting for an event.",
        stats.parked as u64,
    );
    metric(
        "longpoll_ids",
        "gauge",
        "Client ids with an event log.",
        stats.ids as u64,
    );
    metric(
        "longpoll_kept_events",
        "gauge",
        "Events kept in all logs.",
        stats.kept_events as u64,
    );
    metric(
        "longpoll_kept_bytes",
        "gauge",
        "Bytes of event data kept in all logs.",
        stats.kept_bytes as u64,
    );
    metric(
        "longpoll_events_published_total",
        "counter",
        "Events published.",
        stats.published,
    );
    metric(
        "longpoll_deliveries_total",
        "counter",
        "Event responses handed to a connection.",
        stats.delivered,
    );
    metric(
        "longpoll_timeouts_total",
        "counter",
        "Polls answered with a keepalive.",
        stats.timed_out,
    );
    metric(
        "longpoll_cancellations_total",
        "counter",
        "Polls whose client went away first.",
        stats.cancelled,
    );
    metric(
        "longpoll_rejections_total",
        "counter",
        "Polls refused for bad input or limits.",
        stats.rejected,
    );
    metric(
        "longpoll_shed_total",
        "counter",
        "Polls answered 503 during shutdown.",
        stats.shed,
    );
    metric(
        "demo_stalled_writes_total",
        "counter",
        "Connections closed because a response write stayed blocked past --write-timeout.",
        STALLED_WRITES.load(Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
