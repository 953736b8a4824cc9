//! For the stream-mode tests: a GRIP backend whose answers the test spells
//! out (`GET /grip?h=Name:Value&body=...` answers with those headers and
//! body), next-link pages, a recovery endpoint and a gone hook, all
//! recorded; and a client that reads a held response as it arrives.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::percent_decode_str;
use tokio::net::TcpStream;

use super::within;

/// What the backend saw.
#[derive(Default)]
pub struct Seen {
    /// Every request: path and query, and headers.
    pub requests: Mutex<Vec<(String, HeaderMap)>>,
    /// POSTs to `/gone-hook`.
    pub gone_hooks: AtomicUsize,
}

impl Seen {
    /// The requests whose path and query start with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<(String, HeaderMap)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, _)| target.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// The backend: a real axum server on 127.0.0.1.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl Backend {
    pub async fn start() -> Backend {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/grip", get(grip))
            .route("/grip/{*rest}", get(grip))
            .route("/page/{n}", get(page))
            .route("/gone-hook", post(gone_hook))
            .with_state(Arc::clone(&seen));
        let listener = super::listener();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Backend { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The path of a `/grip` request answering with these headers and body.
pub fn grip_path(headers: &[(&str, &str)], body: &str) -> String {
    let encode = |text: &str| {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut query: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("h={}", encode(&format!("{name}:{value}"))))
        .collect();
    query.push(format!("body={}", encode(body)));
    format!("/grip?{}", query.join("&"))
}

fn record(seen: &Seen, target: String, headers: &HeaderMap) {
    seen.requests
        .lock()
        .unwrap()
        .push((target, headers.clone()));
}

/// Answers with the headers (`h=Name:Value`, repeatable) and the body
/// (`body=`) of its query.
async fn grip(
    State(seen): State<Arc<Seen>>,
    uri: http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    record(&seen, uri.to_string(), &headers);
    let mut response = Response::new(axum::body::Body::empty());
    let mut body = String::new();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "h" => {
                let (name, value) = value.split_once(':').expect("h=Name:Value");
                response.headers_mut().append(
                    HeaderName::try_from(name).unwrap(),
                    HeaderValue::try_from(value).unwrap(),
                );
            }
            "body" => body = value,
            _ => {}
        }
    }
    *response.body_mut() = axum::body::Body::from(body);
    response
}

/// `page N\n`, with a next link to page N+1 up to page 3.
async fn page(
    State(seen): State<Arc<Seen>>,
    uri: http::Uri,
    headers: HeaderMap,
    Path(n): Path<u32>,
) -> Response {
    record(&seen, uri.to_string(), &headers);
    let body = format!("page {n}\n");
    if n < 3 {
        (
            [("grip-link", format!("</page/{}>; rel=next", n + 1))],
            body,
        )
            .into_response()
    } else {
        body.into_response()
    }
}

async fn gone_hook(
    State(seen): State<Arc<Seen>>,
    uri: http::Uri,
    headers: HeaderMap,
) -> StatusCode {
    record(&seen, uri.to_string(), &headers);
    seen.gone_hooks.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// A held response read as it arrives, over HTTP/1.1 or HTTP/2.
pub struct Streamed {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub extensions: http::Extensions,
    body: Incoming,
    /// What arrived and was not yet taken by [`Streamed::until`].
    buf: BytesMut,
    /// Every byte that arrived.
    pub all: BytesMut,
}

/// How a held response ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Its last chunk (HTTP/1.1) or END_STREAM (HTTP/2).
    Clean,
    /// Cut: a closed connection or a reset stream.
    Cut,
}

impl Streamed {
    /// `GET path` on a new HTTP/1.1 connection to `addr`.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Streamed {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = http::Request::get(path).header("host", "test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = within(
            "the stream's head",
            sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()),
        )
        .await
        .unwrap();
        Self::of(response)
    }

    /// `GET path` on an HTTP/2 (h2c) connection.
    pub async fn open_h2(addr: SocketAddr, path: &str) -> Streamed {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://test{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = within("the stream's head", sender.send_request(request))
            .await
            .unwrap();
        Self::of(response)
    }

    fn of(response: http::Response<Incoming>) -> Streamed {
        let (parts, body) = response.into_parts();
        Streamed {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
            body,
            buf: BytesMut::new(),
            all: BytesMut::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Reads until `needle` arrives; returns what came before it and the
    /// needle itself.
    pub async fn until(&mut self, needle: &str) -> String {
        let wanted = needle.as_bytes();
        let found = within(&format!("{needle:?} on the stream"), async {
            loop {
                if let Some(at) = self.buf.windows(wanted.len()).position(|w| w == wanted) {
                    return at + wanted.len();
                }
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buf.extend_from_slice(&data);
                            self.all.extend_from_slice(&data);
                        }
                    }
                    Some(Err(err)) => panic!(
                        "the stream was cut before {needle:?}: {err}; it had {:?}",
                        String::from_utf8_lossy(&self.all)
                    ),
                    None => panic!(
                        "the stream ended before {needle:?}; it had {:?}",
                        String::from_utf8_lossy(&self.all)
                    ),
                }
            }
        })
        .await;
        let taken = self.buf.split_to(found);
        String::from_utf8(taken.to_vec()).unwrap()
    }

    /// Reads to the end; what came after the last [`Streamed::until`], and
    /// how it ended.
    pub async fn end(&mut self) -> (String, Ending) {
        let ending = within("the stream to end", async {
            loop {
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buf.extend_from_slice(&data);
                            self.all.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) => return Ending::Cut,
                    None => return Ending::Clean,
                }
            }
        })
        .await;
        let rest = self.buf.split();
        (String::from_utf8_lossy(&rest).into_owned(), ending)
    }
}
