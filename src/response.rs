//! The responses the layer makes: events, keepalives, refusals.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response};

use crate::body::{Commit, ReplyBody};
use crate::cursor::Cursor;
use crate::error::Rejection;
use crate::hub::{Count, Hub};
use crate::keepalive::KeepAlive;
use crate::store::ReadResult;

/// `Longpoll-Gap: true` marks a response after which the client may have
/// missed events.
pub const LONGPOLL_GAP: HeaderName = HeaderName::from_static("longpoll-gap");

/// `Last-Event-ID: <cursor>`: one of the ways a poll sends its cursor (as
/// EventSource clients do); for a CORS layer's allowed request headers.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// How an event response is shaped.
pub(crate) struct Delivery<'a> {
    pub(crate) hub: &'a Hub,
    pub(crate) id: &'a Arc<str>,
    pub(crate) head: bool,
    pub(crate) multipart: bool,
}

/// The response carrying the events a read found: one event as it was
/// published, or, for a client that asked for batches, all of them as
/// `multipart/mixed`.
pub(crate) fn events(delivery: Delivery<'_>, result: ReadResult) -> Response<ReplyBody> {
    let events = result.events();
    let last = events.last().expect("a delivery has at least one event");
    let mut response = Response::new(ReplyBody::empty());
    let (content_type, data) = if delivery.multipart {
        multipart(&result)
    } else {
        let event = &last.event;
        if let Some(status) = event.status_value() {
            *response.status_mut() = status;
        }
        if let Some(extra) = event.headers_value() {
            let headers = response.headers_mut();
            for (name, value) in extra {
                if !is_reserved(name) {
                    headers.append(name, value.clone());
                }
            }
        }
        (
            event.content_type_value().cloned().unwrap_or(OCTET_STREAM),
            event.data().clone(),
        )
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(ETAG, last.cursor.encode().etag());
    headers.insert(CACHE_CONTROL, NO_STORE);
    if result.has_gap() {
        headers.insert(LONGPOLL_GAP, TRUE);
    }
    if delivery.head {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(data.len()));
        delivery.hub.count(Count::Delivered);
    } else {
        let commit = Commit::new(delivery.hub.clone(), Arc::clone(delivery.id), last.cursor);
        *response.body_mut() = ReplyBody::event(data, commit);
    }
    response
}

/// Whether an event's own header is one the layer sets or the connection
/// owns, and so is not sent.
fn is_reserved(name: &HeaderName) -> bool {
    use http::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
        UPGRADE,
    };
    [
        CONTENT_TYPE,
        CONTENT_LENGTH,
        ETAG,
        CACHE_CONTROL,
        LONGPOLL_GAP,
        CONNECTION,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Several events in one `multipart/mixed` body; each part has the event's
/// `Content-Type` and its cursor as `ETag`.
fn multipart(result: &ReadResult) -> (HeaderValue, Bytes) {
    let events = result.events();
    let boundary = boundary_for(events.iter().map(|stored| stored.event.data()));
    let size: usize = events
        .iter()
        .map(|stored| stored.event.data().len() + 128)
        .sum();
    let mut body = BytesMut::with_capacity(size + boundary.len() + 8);
    for stored in events {
        body.put_slice(b"--");
        body.put_slice(boundary.as_bytes());
        body.put_slice(b"\r\nContent-Type: ");
        body.put_slice(
            stored
                .event
                .content_type_value()
                .unwrap_or(&OCTET_STREAM)
                .as_bytes(),
        );
        body.put_slice(b"\r\nETag: \"");
        body.put_slice(stored.cursor.encode().as_str().as_bytes());
        body.put_slice(b"\"\r\n\r\n");
        body.put_slice(stored.event.data());
        body.put_slice(b"\r\n");
    }
    body.put_slice(b"--");
    body.put_slice(boundary.as_bytes());
    body.put_slice(b"--\r\n");
    let content_type = HeaderValue::try_from(format!("multipart/mixed; boundary={boundary}"))
        .expect("the boundary is alphanumeric");
    (content_type, body.freeze())
}

/// A random boundary that occurs in none of the parts.
fn boundary_for<'a>(parts: impl Iterator<Item = &'a Bytes> + Clone) -> String {
    loop {
        let mut boundary = String::with_capacity(27);
        boundary.push_str("lp-");
        boundary.extend((0..24).map(|_| fastrand::alphanumeric()));
        let needle = boundary.as_bytes();
        let clash = parts
            .clone()
            .any(|part| part.windows(needle.len()).any(|window| window == needle));
        if !clash {
            return boundary;
        }
    }
}

/// The response to a poll whose timeout fired.
pub(crate) fn keepalive(keepalive: &KeepAlive, position: Option<Cursor>) -> Response<ReplyBody> {
    let (status, mut headers, body) = keepalive.make();
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, NO_STORE);
    }
    if let Some(position) = position {
        if !headers.contains_key(ETAG) {
            headers.insert(ETAG, position.encode().etag());
        }
    }
    let mut response = Response::new(ReplyBody::bytes(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The plain-text response to a refused poll.
pub(crate) fn rejection(rejection: &Rejection, retry_after_max: u64) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::bytes(Bytes::from(format!("{rejection}\n"))));
    *response.status_mut() = rejection.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, TEXT_PLAIN);
    headers.insert(CACHE_CONTROL, NO_STORE);
    if rejection.retry_later() {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after(retry_after_max)));
    }
    if *rejection == Rejection::MethodNotAllowed {
        headers.insert(ALLOW, GET_HEAD);
    }
    response
}

/// Whole seconds from 1 to `max`, spread so that refused clients do not all
/// come back in the same second.
pub(crate) fn retry_after(max: u64) -> u64 {
    fastrand::u64(1..=max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, StoredEvent};

    #[test]
    fn boundaries_avoid_the_parts() {
        let part = Bytes::from_static(b"--lp-");
        let boundary = boundary_for(std::iter::once(&part));
        assert!(boundary.starts_with("lp-") && boundary.len() == 27);
        assert!(boundary[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn multipart_bodies_frame_every_event() {
        let position = Cursor::new(1, 0);
        let result = ReadResult::with_events(
            position,
            vec![
                StoredEvent {
                    cursor: Cursor::new(1, 1),
                    event: Event::new("one").content_type("text/plain"),
                },
                StoredEvent {
                    cursor: Cursor::new(1, 2),
                    event: Event::new(&b"\x00two"[..]),
                },
            ],
        );
        let (content_type, body) = multipart(&result);
        let content_type = content_type.to_str().unwrap();
        let boundary = content_type
            .strip_prefix("multipart/mixed; boundary=")
            .unwrap();
        let expected = format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nETag: \"0000000000000001-1\"\r\n\r\none\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\nETag: \"0000000000000001-2\"\r\n\r\n\x00two\r\n\
             --{boundary}--\r\n"
        );
        assert_eq!(body, expected.as_bytes());
    }

    #[test]
    fn refusals_say_why_and_when_to_retry() {
        let response = rejection(&Rejection::TooManyForId { limit: 8 }, 5);
        assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = response.headers()[RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry));
        let response = rejection(&Rejection::MethodNotAllowed, 5);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert!(!response.headers().contains_key(RETRY_AFTER));
    }
}
