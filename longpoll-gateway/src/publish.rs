//! The publish listener: `POST /publish/` (EPCP JSON items), `POST
//! /publish/{channel}` (a raw body), `GET /metrics`, `GET /healthz`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;
use tower_longpoll::store::StoreError;
use tower_longpoll::{Event, PublishError};

use crate::items;
use crate::jwt;
use crate::reply::{ProxyBody, full, text, unauthorized};
use crate::state::{State, add};

/// The largest EPCP request body read.
const MAX_PUBLISH_REQUEST: usize = 16 * 1024 * 1024;

pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<ProxyBody> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match path.as_str() {
        "/healthz" => {
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET, HEAD");
            }
            if state.hub.is_shut_down() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            } else {
                text(StatusCode::OK, "ok")
            }
        }
        "/metrics" => {
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET, HEAD");
            }
            let mut response = Response::new(full(Bytes::from(state.render_metrics())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/publish" | "/publish/" => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            if let Err(response) = authorize(&state, request.headers()) {
                return response;
            }
            publish_items(&state, request).await
        }
        _ => match path.strip_prefix("/publish/") {
            Some(channel) if !channel.contains('/') => {
                if method != Method::POST {
                    return not_allowed("POST");
                }
                if let Err(response) = authorize(&state, request.headers()) {
                    return response;
                }
                let channel = percent_decode_str(channel).decode_utf8_lossy().into_owned();
                publish_raw(&state, &channel, request).await
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

fn not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Open when neither a token nor a key is set; otherwise the bearer must be
/// the token (compared in constant time) or a JWT signed with the key.
#[allow(clippy::result_large_err)]
fn authorize(state: &State, headers: &HeaderMap) -> Result<(), Response<ProxyBody>> {
    let config = &state.config;
    if config.publish_token.is_none() && config.publish_key.is_none() {
        return Ok(());
    }
    let refuse = |why: &str| {
        add(&state.metrics.publish_unauthorized);
        tracing::info!(reason = why, "publish refused");
        Err(unauthorized(why))
    };
    let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
        })
    else {
        return refuse("publishing needs Authorization: Bearer");
    };
    if let Some(token) = &config.publish_token {
        if bool::from(token.as_bytes().ct_eq(bearer.as_bytes())) {
            return Ok(());
        }
    }
    if let Some(key) = &config.publish_key {
        match jwt::verify(bearer, key, jwt::now()) {
            Ok(_) => return Ok(()),
            Err(err) if config.publish_token.is_none() => return refuse(&err.to_string()),
            Err(_) => {}
        }
    }
    refuse("the bearer token is not accepted")
}

/// The `Idempotency-Key` of a publish request: a retry with the same key
/// within the store's window publishes nothing new.
fn idempotency_key<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
}

async fn publish_items(state: &State, request: Request<Incoming>) -> Response<ProxyBody> {
    let key = idempotency_key(&request);
    let body = match Limited::new(request.into_body(), MAX_PUBLISH_REQUEST)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return bad_request(
                state,
                &format!("the body could not be read or is over {MAX_PUBLISH_REQUEST} bytes"),
            );
        }
    };
    // Every item is checked before any is published: a `400` publishes
    // nothing.
    let parsed = match items::parse(&body) {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(state, &message),
    };
    for (index, item) in parsed.items.into_iter().enumerate() {
        let channel = item.channel.as_str();
        if let Some(event) = item.response {
            // One key per item: the request's key and the item's place.
            let item_key = key.as_ref().map(|key| format!("{key}#{index}"));
            if let Err(err) = publish_one(
                state,
                channel,
                item.id.as_deref(),
                item_key.as_deref(),
                event,
            )
            .await
            {
                return failed(&format!("items[{index}]"), err);
            }
        } else {
            add(&state.metrics.published_items);
        }
        if let Some(message) = &item.ws {
            if let Err(err) = state.sockets.publish(channel, message).await {
                return failed(&format!("items[{index}].ws-message"), err);
            }
            tracing::debug!(channel, "published to WebSockets");
        }
        if let Some(stream) = &item.stream {
            if let Err(err) = state.streams.publish(channel, stream).await {
                return failed(&format!("items[{index}].http-stream"), err);
            }
            tracing::debug!(channel, id = item.id, "published to streams");
        }
    }
    text(StatusCode::OK, "Published")
}

async fn publish_raw(
    state: &State,
    channel: &str,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let key = idempotency_key(&request);
    let limit = 1024 * 1024;
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("an event is at most {limit} bytes"),
            );
        }
    };
    let mut event = Event::new(body);
    if let Some(content_type) = content_type {
        event = event.content_type(content_type);
    }
    match publish_one(state, channel, None, key.as_deref(), event).await {
        Ok(cursor) => {
            let mut response =
                Response::new(full(Bytes::from(format!("{{\"cursor\":\"{cursor}\"}}\n"))));
            *response.status_mut() = StatusCode::ACCEPTED;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(etag) = HeaderValue::try_from(format!("\"{cursor}\"")) {
                headers.insert(ETAG, etag);
            }
            response
        }
        Err(err) => failed("the event", err),
    }
}

async fn publish_one(
    state: &State,
    channel: &str,
    id: Option<&str>,
    key: Option<&str>,
    event: Event,
) -> Result<tower_longpoll::Cursor, PublishError> {
    let cursor = match key {
        Some(key) => state.hub.publish_idempotent(channel, key, event).await?,
        None => state.hub.publish(channel, event).await?,
    };
    state.channels.published(channel, id, cursor);
    add(&state.metrics.published_items);
    tracing::debug!(channel, id, %cursor, "published");
    Ok(cursor)
}

fn bad_request(state: &State, message: &str) -> Response<ProxyBody> {
    add(&state.metrics.publish_bad_requests);
    tracing::info!(reason = message, "publish refused");
    text(StatusCode::BAD_REQUEST, message)
}

fn failed(what: &str, err: PublishError) -> Response<ProxyBody> {
    let message = format!("{what}: {err}");
    match err {
        PublishError::InvalidId(_)
        | PublishError::InvalidContentType
        | PublishError::InvalidStatus(_) => text(StatusCode::BAD_REQUEST, &message),
        PublishError::TooLarge { .. } => text(StatusCode::PAYLOAD_TOO_LARGE, &message),
        PublishError::Store(StoreError::Full { .. } | StoreError::TooManyIds { .. }) => {
            crate::reply::unavailable(&message)
        }
        _ => {
            tracing::error!(error = %message, "publish failed");
            crate::reply::unavailable(&message)
        }
    }
}
