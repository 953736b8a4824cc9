//! Forwarding to the upstream: streaming bodies, hop-by-hop headers,
//! `X-Forwarded-*`, `Grip-Sig`, upgrades, and the GRIP instructions that come
//! back.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, RETRY_AFTER, UPGRADE, WWW_AUTHENTICATE,
};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value};
use tower_service::Service;

use crate::grip::{self, GRIP_LAST, GRIP_SIG, Instruction};
use crate::headers::{remove_grip, remove_hop_by_hop};
use crate::hold::{self, Outcome};
use crate::jwt;
use crate::state::{State, add};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the gateway sends or forwards.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request body up to this size is kept, so that the request can be sent
/// again with `Grip-Last`; a larger one is streamed and never retried.
const REPLAYABLE_BODY: u64 = 64 * 1024;
/// The most bytes of GRIP instructions (and of the response kept for the
/// timeout) read from the upstream.
const MAX_INSTRUCTION_BODY: usize = 1024 * 1024;
/// Rounds of `prev-id` → `Grip-Last` retries before a hold just waits.
const MAX_RETRIES: usize = 3;
/// How long a Grip-Sig is valid.
const SIG_TTL: u64 = 600;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Who is on the other end of a client connection; set by the server on
/// every request.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The upstream: where, how to reach it, and how to sign for it.
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    base: Uri,
    sig_key: Vec<u8>,
    sig_iss: String,
    timeout: Duration,
}

impl Upstream {
    pub fn new(
        base: Uri,
        sig_key: Vec<u8>,
        sig_iss: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Upstream {
            client,
            base,
            sig_key,
            sig_iss,
            timeout,
        }
    }

    /// The upstream URL for a client's path and query (or for a link the
    /// upstream gave, relative or absolute).
    pub fn url_for(&self, target: &str) -> Result<Uri, http::Error> {
        if let Ok(uri) = target.parse::<Uri>() {
            if uri.scheme().is_some() {
                return Ok(uri);
            }
        }
        let prefix = self.base.path().trim_end_matches('/');
        let path = if target.starts_with('/') {
            format!("{prefix}{target}")
        } else {
            format!("{prefix}/{target}")
        };
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path)?);
        Ok(Uri::from_parts(parts)?)
    }

    /// A fresh `Grip-Sig`: HS256, `iss`, and an `exp` a few minutes ahead.
    pub fn grip_sig(&self) -> HeaderValue {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(self.sig_iss.as_str()));
        claims.insert("exp".into(), Value::from(jwt::now() + SIG_TTL));
        HeaderValue::try_from(jwt::sign(&claims, &self.sig_key)).expect("a JWT is ASCII")
    }

    /// Sends a request; the upstream has `timeout` to answer with its head.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(Failure::Unreachable(err.to_string())),
            Err(_) => Err(Failure::TooSlow),
        }
    }
}

/// Why the upstream gave no response.
#[derive(Debug)]
pub enum Failure {
    Unreachable(String),
    TooSlow,
}

/// The service behind the layer: forwards every request it gets.
#[derive(Clone)]
pub struct Gateway {
    pub state: Arc<State>,
}

impl Service<Request<Incoming>> for Gateway {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move { Ok(forward(state, request).await) })
    }
}

/// A request body as forwarded: kept whole (and so sendable again) or
/// streamed once.
enum Outgoing {
    Kept(Bytes),
    Streamed(Option<Incoming>),
}

impl Outgoing {
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            Outgoing::Kept(bytes) if bytes.is_empty() => Some(empty()),
            Outgoing::Kept(bytes) => Some(full(bytes.clone())),
            Outgoing::Streamed(body) => body
                .take()
                .map(|body| body.map_err(BoxError::from).boxed_unsync()),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Outgoing::Kept(_))
    }
}

async fn forward(state: Arc<State>, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let client = request.extensions().get::<ClientInfo>().copied();
    let wants_upgrade = request.version() == Version::HTTP_11
        && request.headers().contains_key(UPGRADE)
        && request
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let mut client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let upgrade_protocol = parts.headers.get(UPGRADE).cloned();

    let uri = match state
        .upstream
        .url_for(parts.uri.path_and_query().map_or("/", PathAndQuery::as_str))
    {
        Ok(uri) => uri,
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("bad request target: {err}"),
            );
        }
    };
    prepare_head(&mut parts, client);
    if let (true, Some(protocol)) = (wants_upgrade, upgrade_protocol) {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let mut outgoing = match keep_small_body(body, &parts).await {
        Ok(outgoing) => outgoing,
        Err(response) => return response,
    };

    let mut retries = 0;
    loop {
        let Some(body) = outgoing.take() else {
            // A streamed body cannot be sent twice: never reached, as only
            // kept bodies are retried.
            return text(StatusCode::BAD_GATEWAY, "the request cannot be retried");
        };
        let mut upstream_request = Request::from_parts(clone_head(&parts), body);
        upstream_request
            .headers_mut()
            .insert(GRIP_SIG, state.upstream.grip_sig());
        add(&state.metrics.proxied);
        let response = match state.upstream.send(upstream_request).await {
            Ok(response) => response,
            Err(Failure::Unreachable(err)) => {
                add(&state.metrics.upstream_unreachable);
                tracing::warn!(error = %err, path = parts.uri.path(), "upstream unreachable");
                return text(StatusCode::BAD_GATEWAY, "the upstream cannot be reached");
            }
            Err(Failure::TooSlow) => {
                add(&state.metrics.upstream_timeouts);
                tracing::warn!(path = parts.uri.path(), "upstream too slow");
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not answer in time",
                );
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return match client_upgrade.take() {
                Some(client_upgrade) => tunnel(&state, client_upgrade, response),
                None => text(
                    StatusCode::BAD_GATEWAY,
                    "the upstream switched protocols unasked",
                ),
            };
        }
        if !grip::is_instruction(response.headers()) {
            return pass_through(response);
        }

        let (head, body) = response.into_parts();
        let read = Limited::new(body, MAX_INSTRUCTION_BODY).collect();
        let body = match tokio::time::timeout(state.config.upstream_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Err(_) => {
                add(&state.metrics.upstream_timeouts);
                tracing::warn!(
                    path = parts.uri.path(),
                    "upstream too slow with its GRIP response"
                );
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not finish its GRIP response in time",
                );
            }
            Ok(Err(err)) => {
                add(&state.metrics.bad_instructions);
                tracing::warn!(error = %err, "could not read the upstream's GRIP response");
                return text(
                    StatusCode::BAD_GATEWAY,
                    "the upstream's GRIP response could not be read",
                );
            }
        };
        let instruction = match grip::parse(head.status, head.headers, body) {
            Ok(instruction) => instruction,
            Err(err) => {
                add(&state.metrics.bad_instructions);
                tracing::warn!(error = %err, path = parts.uri.path(), "bad GRIP instructions");
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("the upstream's GRIP instructions cannot be followed: {err}"),
                );
            }
        };
        let hold = match instruction {
            Instruction::Respond(whole) => return hold::whole_response(whole),
            Instruction::Hold(hold) => hold,
        };
        let may_retry = outgoing.replayable() && retries < MAX_RETRIES;
        match hold::hold(&state, hold, may_retry).await {
            Outcome::Respond(response) => return response,
            Outcome::Retry(last) => {
                retries += 1;
                add(&state.metrics.hold_retries);
                parts.headers.remove(GRIP_LAST);
                for value in last {
                    parts.headers.append(GRIP_LAST, value);
                }
                tracing::debug!(
                    path = parts.uri.path(),
                    retries,
                    "prev-id behind: retrying with Grip-Last"
                );
            }
        }
    }
}

/// The head sent upstream: no hop-by-hop and no client `Grip-*` headers,
/// `X-Forwarded-For`/`-Proto` set, the client's host kept.
fn prepare_head(parts: &mut Parts, client: Option<ClientInfo>) {
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    remove_grip(headers);
    // The gateway's server side already answered any `100-continue`.
    headers.remove(EXPECT);
    if !headers.contains_key(HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::try_from(authority.as_str()) {
                headers.insert(HOST, host);
            }
        }
    }
    if let Some(client) = client {
        let ip = client.addr.ip().to_string();
        let value = match headers
            .get(&X_FORWARDED_FOR)
            .and_then(|value| value.to_str().ok())
        {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip,
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if client.tls { "https" } else { "http" }),
        );
    }
}

fn clone_head(parts: &Parts) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// Keeps a small body whole so that the request can be retried; streams
/// the rest.
async fn keep_small_body(body: Incoming, parts: &Parts) -> Result<Outgoing, Response<ProxyBody>> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(Outgoing::Kept(Bytes::new()));
    }
    let small = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .is_some_and(|length| length <= REPLAYABLE_BODY)
        && parts.method != Method::CONNECT;
    if !small {
        return Ok(Outgoing::Streamed(Some(body)));
    }
    match Limited::new(body, REPLAYABLE_BODY as usize).collect().await {
        Ok(collected) => Ok(Outgoing::Kept(collected.to_bytes())),
        Err(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )),
    }
}

/// An ordinary response: streamed to the client, minus hop-by-hop and
/// `Grip-*` headers.
fn pass_through(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut head, body) = response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    remove_grip(&mut head.headers);
    Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync())
}

/// Answers `101` and joins the two upgraded connections.
fn tunnel(
    state: &State,
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut response: Response<Incoming>,
) -> Response<ProxyBody> {
    add(&state.metrics.upgrades);
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
                    Err(err) => tracing::debug!(error = %err, "upgraded connection ended"),
                }
            }
            Err(err) => tracing::debug!(error = %err, "upgrade failed"),
        }
    });
    let (mut head, _) = response.into_parts();
    remove_grip(&mut head.headers);
    Response::from_parts(head, empty())
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text answer of the gateway's own.
pub fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `503` with a `Retry-After` spread from 1 to 5 s, so that shed clients do
/// not all come back in the same second.
pub fn unavailable(message: &str) -> Response<ProxyBody> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(fastrand::u64(1..=5)));
    response
}

/// `401` asking for a bearer token.
pub fn unauthorized(message: &str) -> Response<ProxyBody> {
    let mut response = text(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base: &str) -> Upstream {
        Upstream::new(
            base.parse().unwrap(),
            b"key".to_vec(),
            "me".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn urls_keep_the_prefix_and_take_absolute_links() {
        let up = upstream("http://127.0.0.1:9/api/");
        assert_eq!(
            up.url_for("/a?b=1").unwrap(),
            "http://127.0.0.1:9/api/a?b=1"
        );
        assert_eq!(up.url_for("gone").unwrap(), "http://127.0.0.1:9/api/gone");
        assert_eq!(up.url_for("http://other:1/x").unwrap(), "http://other:1/x");
        let bare = upstream("http://127.0.0.1:9");
        assert_eq!(bare.url_for("/a").unwrap(), "http://127.0.0.1:9/a");
    }

    #[tokio::test]
    async fn grip_sig_verifies_with_the_key() {
        let up = upstream("http://127.0.0.1:9");
        let sig = up.grip_sig();
        let claims = jwt::verify(sig.to_str().unwrap(), b"key", jwt::now()).unwrap();
        assert_eq!(claims["iss"], "me");
        assert!(claims["exp"].as_u64().unwrap() > jwt::now());
    }
}
