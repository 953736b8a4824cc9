//! What the library's parsers promise whatever the input, in one place for
//! the fuzz targets (`fuzz/fuzz_targets/{cursor,poll_request}.rs`) and the
//! proptests of `tests/fuzz_props.rs`: each check panics when a promise is
//! broken.
//!
//! - `Cursor::from_str`: [`check_cursor_text`].
//! - One poll from raw parts through a real `LongPollLayer` (route match,
//!   client id, cursors, `?timeout`, `?batch`, request body): [`run`].
//!   Nothing waits: the layer's timeout and the most a client may ask for
//!   are zero, and a case whose query has no `timeout` of its own gets
//!   `timeout=0`, which answers without parking.

#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};
use tower_longpoll::{ClientId, Cursor, Event, Hub, LongPollLayer};

/// `Cursor::from_str` never panics, and every text it accepts is the text of
/// the cursor it names, up to what docs/protocol.md lets a client vary: the
/// case of the hex digits and leading zeros in the sequence. The cursor's
/// own text parses back to it.
pub(crate) fn check_cursor_text(text: &str) {
    let Ok(cursor) = text.parse::<Cursor>() else {
        return;
    };
    let (epoch, seq) = text.split_once('-').expect("an accepted cursor has a `-`");
    let seq = seq.trim_start_matches('0');
    let seq = if seq.is_empty() { "0" } else { seq };
    assert_eq!(
        cursor.to_string(),
        format!("{}-{seq}", epoch.to_ascii_lowercase()),
        "{text:?} was accepted as {cursor:?}"
    );
    assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
}

/// The statuses the layer may answer a poll with.
pub(crate) const ALLOWED: [u16; 8] = [200, 204, 400, 405, 408, 413, 429, 503];

/// How many layer set-ups [`PollCase::setup`] picks from.
pub(crate) const SETUPS: u8 = 7;

/// The longest request body a poll may carry in these set-ups.
pub(crate) const MAX_BODY: usize = 16;

/// The raw parts of one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct PollCase {
    /// Which layer: the client id from the path, several path parameters, a
    /// header, the query, a cookie, a function; or a hub that is shut down.
    pub(crate) setup: u8,
    pub(crate) method: u8,
    /// The request target up to the query (normally a path).
    pub(crate) path: Vec<u8>,
    pub(crate) query: Option<Vec<u8>>,
    pub(crate) last_event_id: Option<Vec<u8>>,
    pub(crate) if_none_match: Option<Vec<u8>>,
    pub(crate) cookie: Option<Vec<u8>>,
    /// The `X-Client` header, the id of the header and function set-ups.
    pub(crate) client: Option<Vec<u8>>,
    pub(crate) body: Vec<u8>,
}

/// What the poll was answered with.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The inner service answered: the request was not a poll.
    pub(crate) passed_through: bool,
    pub(crate) body: Bytes,
}

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
];

impl PollCase {
    fn method(&self) -> Method {
        METHODS[usize::from(self.method) % METHODS.len()].clone()
    }

    /// The request, or `None` when the `http` crate refuses its parts (a
    /// server never sees such a request).
    pub(crate) fn request(&self) -> Option<Request<Full<Bytes>>> {
        let mut target = self.path.clone();
        let query = self.query.as_deref().unwrap_or_default();
        let has_timeout = query
            .split(|&b| b == b'&')
            .any(|pair| pair.split(|&b| b == b'=').next() == Some(b"timeout"));
        let mut query = query.to_vec();
        if !has_timeout {
            if !query.is_empty() {
                query.push(b'&');
            }
            query.extend_from_slice(b"timeout=0");
        }
        target.push(b'?');
        target.extend_from_slice(&query);
        let uri = Uri::from_maybe_shared(Bytes::from(target)).ok()?;
        let mut request = Request::new(Full::new(Bytes::from(self.body.clone())));
        *request.method_mut() = self.method();
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in [
            ("last-event-id", &self.last_event_id),
            ("if-none-match", &self.if_none_match),
            ("cookie", &self.cookie),
            ("x-client", &self.client),
        ] {
            if let Some(value) = value {
                headers.insert(name, HeaderValue::from_bytes(value).ok()?);
            }
        }
        Some(request)
    }
}

/// A case from the text of a `fuzz/corpus/poll_request` file, which reads
/// like a request so that seeds are written by hand:
///
/// ```text
/// <setup digit><method digit><target>\n
/// <header name>: <value>\n    (last-event-id, if-none-match, cookie, x-client)
/// \n
/// <body>
/// ```
///
/// Methods: 0 GET, 1 HEAD, 2 POST, 3 PUT, 4 DELETE, 5 OPTIONS, 6 PATCH.
/// Set-ups: 0 `/poll/{client}`, 1 `/t/{tenant}/u/{user}/events` (id: `user`),
/// 2 `/events` (id: header `x-client`), 3 `/events` (id: query `client`),
/// 4 `/events` (id: cookie `sid`), 5 paths under `/ext` (id: a function of
/// `x-client`), 6 `/poll/{client}` on a hub that is shut down.
pub(crate) fn parse_case(data: &[u8]) -> Option<PollCase> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let [setup, method, target @ ..] = first else {
        return None;
    };
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], Some(target[at + 1..].to_vec())),
        None => (target, None),
    };
    let mut case = PollCase {
        setup: setup.wrapping_sub(b'0'),
        method: method.wrapping_sub(b'0'),
        path: path.to_vec(),
        query,
        body: body.to_vec(),
        ..PollCase::default()
    };
    for line in lines {
        let at = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..at], &line[at + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value).to_vec();
        let slot = match name {
            b"last-event-id" => &mut case.last_event_id,
            b"if-none-match" => &mut case.if_none_match,
            b"cookie" => &mut case.cookie,
            b"x-client" => &mut case.client,
            _ => continue,
        };
        *slot = Some(value);
    }
    Some(case)
}

/// The layer of a set-up, over a hub holding a few events for `a` and `b`.
async fn layer(setup: u8) -> (LongPollLayer, Hub) {
    let hub = Hub::new();
    for (id, data) in [("a", "one"), ("a", "two"), ("a", "three"), ("b", "only")] {
        hub.publish(id, Event::new(data))
            .await
            .expect("publishing to the fresh hub");
    }
    let builder = LongPollLayer::builder(hub.clone())
        .timeout(Duration::ZERO)
        .max_timeout(Duration::ZERO)
        .batching(8)
        .max_request_body(MAX_BODY);
    let builder = match setup % SETUPS {
        0 => builder.route("/poll/{client}"),
        1 => builder
            .route("/t/{tenant}/u/{user}/events")
            .client_id(ClientId::path("user")),
        2 => builder
            .route("/events")
            .client_id(ClientId::header("x-client")),
        3 => builder
            .route("/events")
            .client_id(ClientId::query("client")),
        4 => builder.route("/events").client_id(ClientId::cookie("sid")),
        5 => builder
            .route_if(|head| head.uri().path().starts_with("/ext"))
            .client_id(ClientId::from_fn(|head| {
                let client = head.headers().get("x-client")?.to_str().ok()?;
                Some(client.to_owned())
            })),
        _ => {
            hub.shutdown();
            builder.route("/poll/{client}")
        }
    };
    (builder.build(), hub)
}

/// Sends the case through the layer and checks the answer; `None` when
/// the case is not a request. Panics when an invariant does not hold.
pub(crate) async fn run(case: &PollCase) -> Option<Answer> {
    let request = case.request()?;
    let method = request.method().clone();
    let (layer, hub) = layer(case.setup).await;
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"inner")));
        response
            .headers_mut()
            .insert("x-inner", HeaderValue::from_static("1"));
        Ok::<_, Infallible>(response)
    });
    let service = layer.layer(inner);
    let answer = async {
        let response = service
            .oneshot(request)
            .await
            .expect("the layer is infallible");
        let (head, body) = response.into_parts();
        let body = body.collect().await.expect("a body in memory").to_bytes();
        (head, body)
    };
    // Nothing waits: ten seconds mean a poll that never answers.
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap_or_else(|_| panic!("no answer to {case:?}"));
    let passed_through = head.headers.contains_key("x-inner");
    let status = head.status;
    if passed_through {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "inner");
    } else {
        check(&method, &head, &body, case);
    }
    let stats = hub.stats();
    assert_eq!(stats.parked, 0, "a poll stayed parked: {case:?}");
    Some(Answer {
        status,
        passed_through,
        body,
    })
}

/// What every answer of the layer itself must be.
fn check(method: &Method, head: &http::response::Parts, body: &Bytes, case: &PollCase) {
    let status = head.status;
    let headers = &head.headers;
    assert!(
        ALLOWED.contains(&status.as_u16()),
        "status {status} for {case:?}"
    );
    assert_eq!(
        headers.get(CACHE_CONTROL),
        Some(&HeaderValue::from_static("no-store")),
        "{status} without Cache-Control: no-store for {case:?}"
    );
    let etag_cursor = || {
        let etag = headers
            .get(ETAG)
            .unwrap_or_else(|| panic!("{status} without ETag for {case:?}"))
            .to_str()
            .expect("an ETag is ASCII");
        let inner = etag
            .strip_prefix('"')
            .and_then(|etag| etag.strip_suffix('"'))
            .expect("a strong entity tag");
        inner
            .parse::<Cursor>()
            .unwrap_or_else(|err| panic!("ETag {etag} is not a cursor: {err}"));
    };
    match status.as_u16() {
        200 => {
            etag_cursor();
            assert!(headers.contains_key(CONTENT_TYPE));
            if *method == Method::HEAD {
                assert!(body.is_empty());
            } else {
                assert!(!body.is_empty(), "every event published here has a body");
            }
        }
        204 => {
            etag_cursor();
            assert!(body.is_empty());
        }
        _ => {
            assert_eq!(
                headers.get(CONTENT_TYPE),
                Some(&HeaderValue::from_static("text/plain; charset=utf-8")),
                "{status} for {case:?}"
            );
            let text = std::str::from_utf8(body).expect("an error body is UTF-8");
            assert!(
                text.len() > 1 && text.len() < 512 && text.ends_with('\n'),
                "error body {text:?} for {case:?}"
            );
            assert!(!text.trim().is_empty());
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert!(*method != Method::GET && *method != Method::HEAD);
                assert_eq!(
                    headers.get(ALLOW).map(|v| v.as_bytes()),
                    Some(&b"GET, HEAD"[..])
                );
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                assert!(headers.contains_key(RETRY_AFTER));
            }
        }
    }
}
