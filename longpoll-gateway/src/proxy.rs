//! Forwarding to the upstream: streaming bodies, hop-by-hop headers,
//! `X-Forwarded-*`, `Grip-Sig`, upgrades, and the GRIP instructions that come
//! back.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, UPGRADE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::grip::{
    self, FEATURES, GRIP_FEATURE, GRIP_LAST, GRIP_SIG, Instruction, MAX_INSTRUCTION_BODY,
};
use crate::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, remove_grip, remove_hop_by_hop};
use crate::hold::{self, Outcome};
use crate::reply::{BoxError, ProxyBody, empty, full, text};
use crate::routes::{Proto, Route, Via, cors};
use crate::server::ClientInfo;
use crate::state::{State, add};
use crate::stream;
use crate::upstream::Failure;

/// A request body up to this size is kept, so that the request can be sent
/// again with `Grip-Last`; a larger one is streamed and never retried.
const REPLAYABLE_BODY: u64 = 64 * 1024;
/// Rounds of `prev-id` → `Grip-Last` retries before a hold just waits.
const MAX_RETRIES: usize = 3;

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

async fn forward(state: Arc<State>, request: Request<Incoming>) -> Response<ProxyBody> {
    let client = request.extensions().get::<ClientInfo>().cloned();
    let wants_upgrade = request.version() == Version::HTTP_11
        && request.headers().contains_key(UPGRADE)
        && request
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let route = match &state.routes {
        None => None,
        Some(routes) => {
            let websocket = crate::ws::is_websocket(&request)
                || wants_upgrade
                    && request
                        .headers()
                        .get(UPGRADE)
                        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let proto = if websocket { Proto::Ws } else { Proto::Http };
            let ssl = client.as_ref().is_some_and(|client| client.tls);
            let host = request_host(&request);
            let path = request.uri().path();
            match routes.table().find(&host, proto, ssl, path) {
                Some(route) => Some(Arc::clone(route)),
                None => {
                    add(&state.metrics.no_route);
                    tracing::debug!(%host, path, "no route");
                    return text(
                        StatusCode::BAD_GATEWAY,
                        &format!("no route for host {host:?} and path {path:?} in the routes file"),
                    );
                }
            }
        }
    };
    let over_http = match &route {
        Some(route) => route.targets.first().is_some_and(|t| t.over_http),
        None => state.config.over_http,
    };
    if crate::ws::is_websocket(&request) {
        if over_http {
            let via = route.map(|route| Via { route, target: 0 });
            return crate::ws::accept(Arc::clone(&state), request, via, client).await;
        }
        if request.version() == Version::HTTP_2 {
            // Only the gateway can end a WebSocket over HTTP/2: there is no
            // upgrade to pass on.
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "WebSockets over HTTP/2 need an over_http route (or --over-http)",
            );
        }
    }
    let cors = route
        .as_ref()
        .filter(|route| route.aco)
        .map(|_| cors::Asked::of(request.headers()));
    let mut response = forward_on(&state, request, client, wants_upgrade, route).await;
    if let Some(asked) = cors {
        asked.answer(response.headers_mut());
    }
    response
}

/// The host a request names (its `Host`, or the authority of an HTTP/2
/// request), without the port, in lower case: what routes match.
fn request_host(request: &Request<Incoming>) -> std::borrow::Cow<'_, str> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("");
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.find(']').map_or(host, |end| &host[..end + 2])
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

async fn forward_on(
    state: &Arc<State>,
    mut request: Request<Incoming>,
    client: Option<ClientInfo>,
    wants_upgrade: bool,
    route: Option<Arc<Route>>,
) -> Response<ProxyBody> {
    let mut client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let upgrade_protocol = parts.headers.get(UPGRADE).cloned();
    // The client's URI (a reference count, not a copy): its path and query
    // are what routes rewrite and relative links resolve against.
    let client_uri = parts.uri.clone();
    let client_target = client_uri
        .path_and_query()
        .map_or("/", PathAndQuery::as_str);

    // Without a routes file, the one upstream's URL; with one, each target's
    // is made as it is tried.
    let uri = match &route {
        Some(_) => None,
        None => match state.upstream.url_for(client_target) {
            Ok(uri) => Some(uri),
            Err(err) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("bad request target: {err}"),
                );
            }
        },
    };
    prepare_head(&mut parts, client);
    if let (true, Some(protocol)) = (wants_upgrade, upgrade_protocol) {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
    }
    if let Some(route) = &route {
        route.set_headers(&mut parts.headers);
    }
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
    let grip = route.as_ref().is_none_or(|route| route.grip);

    let mut outgoing = match keep_small_body(body, &parts).await {
        Ok(outgoing) => outgoing,
        Err(response) => return response,
    };

    let mut retries = 0;
    loop {
        let mut via = route.clone().map(|route| Via { route, target: 0 });
        let response = loop {
            let Some(body) = outgoing.take() else {
                // A streamed body cannot be sent twice: never reached, as
                // only kept bodies are retried.
                return text(StatusCode::BAD_GATEWAY, "the request cannot be retried");
            };
            let mut head = clone_head(&parts);
            if let Some(via) = &via {
                match via.url(client_target) {
                    Ok(uri) => head.uri = uri,
                    Err(err) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            &format!("bad request target: {err}"),
                        );
                    }
                }
                if let Some(host) = via.host().and_then(|h| HeaderValue::try_from(h).ok()) {
                    head.headers.insert(HOST, host);
                }
            }
            if grip {
                let (key, iss) = via.as_ref().map_or((None, None), Via::signer);
                head.headers
                    .insert(GRIP_SIG, state.upstream.grip_sig_with(key, iss));
                head.headers.insert(GRIP_FEATURE, FEATURES);
            }
            let check = via.as_ref().is_none_or(Via::checked);
            add(&state.metrics.proxied);
            let path = head.uri.path().to_owned();
            match state
                .upstream
                .send_checked(Request::from_parts(head, body), check)
                .await
            {
                Ok(response) => break response,
                Err(Failure::NoConnection(err))
                    if outgoing.replayable()
                        && via
                            .as_ref()
                            .is_some_and(|via| via.target + 1 < via.route.targets.len()) =>
                {
                    let via = via.as_mut().expect("a route has targets");
                    tracing::warn!(error = %err, target = %via.route.targets[via.target], line = via.route.line, "target unreachable; trying the next");
                    via.target += 1;
                }
                Err(Failure::NoConnection(err) | Failure::Unreachable(err)) => {
                    add(&state.metrics.upstream_unreachable);
                    tracing::warn!(error = %err, path, "upstream unreachable");
                    return match &via {
                        Some(via) => text(
                            StatusCode::BAD_GATEWAY,
                            &format!(
                                "no target of the route on line {} of the routes file could be reached (tried up to {})",
                                via.route.line, via.route.targets[via.target]
                            ),
                        ),
                        None => text(StatusCode::BAD_GATEWAY, "the upstream cannot be reached"),
                    };
                }
                Err(Failure::TooSlow) => {
                    add(&state.metrics.upstream_timeouts);
                    tracing::warn!(path, "upstream too slow");
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the upstream did not answer in time",
                    );
                }
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return match client_upgrade.take() {
                Some(client_upgrade) => tunnel(state, client_upgrade, response),
                None => text(
                    StatusCode::BAD_GATEWAY,
                    "the upstream switched protocols unasked",
                ),
            };
        }
        if !grip || !grip::is_instruction(response.headers()) {
            return pass_through(response);
        }

        let (head, body) = response.into_parts();
        if grip::streams_its_body(&head.headers) {
            // A stream's first body goes to the client as it comes.
            return match grip::parse(head.status, head.headers, Bytes::new()) {
                Ok(Instruction::Stream(stream)) => {
                    let origin = origin(client_target, &parts, via);
                    stream::start(state, stream, Some(body), origin).await
                }
                Ok(_) => bad_instructions(state, &parts, "not a stream".into()),
                Err(err) => bad_instructions(state, &parts, err),
            };
        }
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
            Err(err) => return bad_instructions(state, &parts, err),
        };
        let hold = match instruction {
            Instruction::Respond(whole) => return hold::whole_response(whole),
            Instruction::Stream(stream) => {
                let origin = origin(client_target, &parts, via);
                return stream::start(state, stream, None, origin).await;
            }
            Instruction::Hold(hold) => hold,
        };
        let may_retry = outgoing.replayable() && retries < MAX_RETRIES;
        match hold::hold(state, hold, may_retry).await {
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

/// `502` for instructions the gateway cannot follow.
fn bad_instructions(state: &State, parts: &Parts, err: String) -> Response<ProxyBody> {
    add(&state.metrics.bad_instructions);
    tracing::warn!(error = %err, path = parts.uri.path(), "bad GRIP instructions");
    text(
        StatusCode::BAD_GATEWAY,
        &format!("the upstream's GRIP instructions cannot be followed: {err}"),
    )
}

/// What a stream keeps of its request: the client's URL (for relative
/// links), the forwarded `Host` and `X-Forwarded-*`, how to close the
/// client's connection, and the route it took.
fn origin(client_target: &str, parts: &Parts, via: Option<Via>) -> stream::Origin {
    let abort = parts
        .extensions
        .get::<ClientInfo>()
        .and_then(|client| client.abort.clone());
    let mut origin = stream::Origin::of(client_target, &parts.headers, abort);
    origin.via = via;
    origin
}

/// The head sent upstream: no hop-by-hop and no client `Grip-*` headers,
/// `X-Forwarded-For`/`-Proto` set, the client's host kept.
pub(crate) fn prepare_head(parts: &mut Parts, client: Option<ClientInfo>) {
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
