//! WebSocket-over-HTTP, as Pushpin speaks it: the gateway ends the client's
//! WebSocket and talks to the backend with HTTP POSTs of
//! `application/websocket-events` (see [`events`]), one `Connection-Id` per
//! socket, `Meta-*` headers the backend set with `Set-Meta-*`. The backend
//! accepts a socket by answering its `OPEN` with `OPEN`. With the `grip`
//! extension (the backend's answer to `OPEN` carries
//! `Sec-WebSocket-Extensions: grip`), its messages are prefixed: `m:` is
//! taken off, `c:` messages are controls (`subscribe`, `unsubscribe`,
//! `detach`, `keep-alive`, `close`). Sockets subscribed to a channel get
//! its `ws-message` publishes.
//!
//! Switched on by a routes-file target's `over_http`, or `--over-http`
//! with `--upstream`; otherwise upgrades are passed through.

pub mod events;
pub mod registry;
mod session;

use std::sync::Arc;

use bytes::BytesMut;
use http::header::{
    ACCEPT, CONNECTION, CONTENT_TYPE, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use self::events::{Event, Kind};
use crate::grip::{FEATURES, GRIP_FEATURE, GRIP_SIG};
use crate::reply::{ProxyBody, empty, full, text};
use crate::routes::Via;
use crate::server::ClientInfo;
use crate::state::{State, add};
use crate::upstream::Failure;

pub use self::registry::Sockets;

const CONNECTION_ID: HeaderName = HeaderName::from_static("connection-id");
const KEEP_ALIVE_INTERVAL: HeaderName = HeaderName::from_static("keep-alive-interval");
/// The most a backend's answer may hold.
const MAX_ANSWER: usize = 1024 * 1024;

/// Whether a request opens a WebSocket the gateway can end itself: an
/// HTTP/1.1 upgrade (`Upgrade: websocket`, version 13 with a key), or an
/// HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441).
pub fn is_websocket(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    if request.version() == http::Version::HTTP_2 {
        return request.method() == Method::CONNECT
            && request
                .extensions()
                .get::<hyper::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    }
    request.version() == http::Version::HTTP_11
        && request.method() == Method::GET
        && headers
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
        && headers.contains_key(SEC_WEBSOCKET_KEY)
}

/// How to reach the backend of one socket.
pub(crate) struct Backend {
    state: Arc<State>,
    url: Uri,
    /// The client's handshake headers as forwarded, sent with every POST.
    headers: HeaderMap,
    via: Option<Via>,
    connection_id: HeaderValue,
    /// `Meta-*` set by the backend's `Set-Meta-*`.
    meta: HeaderMap,
    /// The last POST made no connection: another target may be tried.
    unconnected: bool,
    /// The client's path and query and `Host`, to move to another target.
    client_target: String,
    client_host: Option<HeaderValue>,
}

/// What the backend answered to a POST.
pub(crate) struct Answer {
    /// Not `200`: a refusal, whose body is kept in `refusal`.
    pub status: StatusCode,
    pub refusal: bytes::Bytes,
    pub events: Vec<Event>,
    /// `Keep-Alive-Interval`, in seconds.
    pub keep_alive: Option<u64>,
    pub headers: HeaderMap,
}

impl Backend {
    /// POSTs `events`; the backend's events, or why there are none.
    pub(crate) async fn post(&mut self, events: &[Event]) -> Result<Answer, String> {
        let mut body = BytesMut::new();
        events::encode(events, &mut body);
        let mut request = Request::new(full(body.freeze()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        for (name, value) in &self.meta {
            headers.insert(name.clone(), value.clone());
        }
        let media = HeaderValue::from_static(events::CONTENT_TYPE);
        headers.insert(CONTENT_TYPE, media.clone());
        headers.insert(ACCEPT, media);
        headers.insert(CONNECTION_ID, self.connection_id.clone());
        let (key, iss) = self.via.as_ref().map_or((None, None), Via::signer);
        headers.insert(GRIP_SIG, self.state.upstream.grip_sig_with(key, iss));
        headers.insert(GRIP_FEATURE, FEATURES);
        let check = self.via.as_ref().is_none_or(Via::checked);
        add(&self.state.metrics.proxied);
        let response = self
            .state
            .upstream
            .send_checked(request, check)
            .await
            .map_err(|err| {
                self.unconnected = matches!(err, Failure::NoConnection(_));
                match err {
                    Failure::NoConnection(err) | Failure::Unreachable(err) => err,
                    Failure::TooSlow => "no answer in time".into(),
                }
            })?;
        let (head, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|err| format!("its body could not be read: {err}"))?
            .to_bytes();
        if head.status != StatusCode::OK {
            return Ok(Answer {
                status: head.status,
                refusal: body,
                events: Vec::new(),
                keep_alive: None,
                headers: head.headers,
            });
        }
        self.keep_meta(&head.headers);
        let keep_alive = head
            .headers
            .get(KEEP_ALIVE_INTERVAL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let events = events::decode(&body)?;
        Ok(Answer {
            status: head.status,
            refusal: bytes::Bytes::new(),
            events,
            keep_alive,
            headers: head.headers,
        })
    }

    /// Moves to the route's next target, if it has one.
    fn next_target(&mut self) -> bool {
        let Some(via) = &mut self.via else {
            return false;
        };
        if via.target + 1 >= via.route.targets.len() {
            return false;
        }
        via.target += 1;
        let Ok(url) = via.url(&self.client_target) else {
            return false;
        };
        self.url = url;
        let host = via
            .host()
            .and_then(|h| HeaderValue::try_from(h).ok())
            .or_else(|| self.client_host.clone());
        match host {
            Some(host) => self.headers.insert(HOST, host),
            None => self.headers.remove(HOST),
        };
        true
    }

    /// `Set-Meta-Name: value` is sent back as `Meta-Name: value` from then
    /// on (an empty value removes it).
    fn keep_meta(&mut self, headers: &HeaderMap) {
        for (name, value) in headers {
            let Some(rest) = name.as_str().strip_prefix("set-meta-") else {
                continue;
            };
            let Ok(meta) = HeaderName::try_from(format!("meta-{rest}")) else {
                continue;
            };
            if value.is_empty() {
                self.meta.remove(&meta);
            } else {
                self.meta.insert(meta, value.clone());
            }
        }
    }
}

/// Ends a client's WebSocket upgrade here: sends the backend `OPEN` and,
/// when it answers `OPEN`, switches protocols and runs the socket; any
/// other answer is the client's (a refusal).
pub async fn accept(
    state: Arc<State>,
    mut request: Request<Incoming>,
    via: Option<Via>,
    client: Option<ClientInfo>,
) -> Response<ProxyBody> {
    // HTTP/2 (RFC 8441) has no key to answer: its 200 accepts.
    let http2 = request.version() == http::Version::HTTP_2;
    let key = request.headers().get(SEC_WEBSOCKET_KEY).cloned();
    if key.is_none() && !http2 {
        return text(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (mut parts, _) = request.into_parts();
    // The backend is POSTed to as for any request: not CONNECT's form.
    parts.method = Method::GET;
    let client_target = parts
        .uri
        .path_and_query()
        .map_or("/", PathAndQuery::as_str)
        .to_owned();
    crate::proxy::prepare_head(&mut parts, client);
    let mut headers = parts.headers;
    let client_host = headers.get(HOST).cloned();
    for name in [
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_EXTENSIONS,
        CONNECTION,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    if let Some(via) = &via {
        via.route.set_headers(&mut headers);
        if let Some(host) = via.host().and_then(|h| HeaderValue::try_from(h).ok()) {
            headers.insert(HOST, host);
        }
    }
    let url = match &via {
        Some(via) => via.url(&client_target),
        None => state.upstream.url_for(&client_target),
    };
    let url = match url {
        Ok(url) => url,
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("bad request target: {err}"),
            );
        }
    };
    let id = state.sockets.id();
    let connection_id = HeaderValue::try_from(format!("lg-{:x}-{id:x}", fastrand::u64(..)))
        .expect("hex is a header value");
    let mut backend = Backend {
        state: Arc::clone(&state),
        url,
        headers,
        via,
        connection_id,
        meta: HeaderMap::new(),
        unconnected: false,
        client_target: client_target.clone(),
        client_host,
    };
    let answer = loop {
        match backend.post(&[Event::new(Kind::Open, "")]).await {
            Ok(answer) => break answer,
            Err(err) if backend.unconnected && backend.next_target() => {
                tracing::warn!(error = %err, "WebSocket-over-HTTP: target unreachable; trying the next");
            }
            Err(err) => {
                add(&state.metrics.upstream_unreachable);
                tracing::warn!(error = %err, path = client_target, "WebSocket-over-HTTP: OPEN not answered");
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("the upstream did not accept the WebSocket: {err}"),
                );
            }
        }
    };
    if answer.status != StatusCode::OK {
        // The backend's refusal is the client's answer, as in Pushpin.
        let mut response = Response::new(full(answer.refusal));
        *response.status_mut() = answer.status;
        if let Some(media) = answer.headers.get(CONTENT_TYPE) {
            response.headers_mut().insert(CONTENT_TYPE, media.clone());
        }
        return response;
    }
    let mut events = answer.events.into_iter();
    if events.next().map(|e| e.kind) != Some(Kind::Open) {
        return text(
            StatusCode::FORBIDDEN,
            "the upstream did not accept the WebSocket",
        );
    }
    let grip = answer
        .headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|ext| ext.split(';').next().unwrap_or("").trim() == "grip");
    let mut response = Response::new(empty());
    if key.is_some() {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    }
    let head = response.headers_mut();
    if let Some(key) = key {
        head.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        head.insert(UPGRADE, HeaderValue::from_static("websocket"));
        head.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::try_from(derive_accept_key(key.as_bytes())).expect("base64"),
        );
    }
    if let Some(protocol) = answer.headers.get(SEC_WEBSOCKET_PROTOCOL) {
        head.insert(SEC_WEBSOCKET_PROTOCOL, protocol.clone());
    }
    add(&state.metrics.upgrades);
    let first: Vec<Event> = events.collect();
    let keep_alive = answer.keep_alive;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                session::run(state, backend, upgraded, id, grip, first, keep_alive).await;
            }
            Err(err) => tracing::debug!(error = %err, "WebSocket upgrade failed"),
        }
    });
    response
}
