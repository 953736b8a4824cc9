//! A GRIP backend for the gateway's tests: a real axum server on
//! 127.0.0.1:0 that answers plainly, streams, echoes, upgrades, and issues
//! GRIP instructions.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

/// Size of the large bodies: 10 MiB.
pub const BIG: usize = 10 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// What the upstream saw.
#[derive(Default)]
pub struct Seen {
    /// Requests to `/prev/...`.
    pub prev_requests: AtomicUsize,
    /// POSTs to `/gone-hook`.
    pub gone_hooks: AtomicUsize,
    /// POSTs to `/gone-hook` that carried a Grip-Sig.
    pub gone_hooks_signed: AtomicUsize,
    /// Opens the second half of `/gated`.
    pub gate: Notify,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/hello", get(|| async { ([("x-upstream", "1")], "hello") }))
            .route("/headers", get(headers))
            .route(
                "/echo",
                post(|body: Body| async move { Response::new(body) }),
            )
            .route("/first-chunk", post(first_chunk))
            .route("/big", get(|| async { Body::new(Generated::new(BIG)) }))
            .route("/gated", get(gated))
            .route("/hold/{channel}", get(hold))
            .route("/hold-json/{channel}", get(hold_json))
            .route("/prev/{prev}", get(prev))
            .route("/multi", get(multi))
            .route("/gone", get(gone))
            .route("/gone-hook", post(gone_hook))
            .route("/slow", get(slow))
            .route("/ws", get(ws))
            .route("/bad-grip", get(bad_grip))
            .with_state(Arc::clone(&seen));
        let listener = super::listener();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The byte at `index` of a generated body.
pub fn pattern(index: usize) -> u8 {
    (index % 251) as u8
}

/// `len` bytes of [`pattern`], in 64 KiB frames, with no length announced.
pub struct Generated {
    sent: usize,
    len: usize,
}

impl Generated {
    pub fn new(len: usize) -> Self {
        Generated { sent: 0, len }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent == self.len {
            return Poll::Ready(None);
        }
        let end = (self.sent + CHUNK).min(self.len);
        let chunk: Vec<u8> = (self.sent..end).map(pattern).collect();
        self.sent = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// A body fed through a channel, chunk by chunk.
pub struct Channel(pub mpsc::Receiver<Bytes>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// The request headers, as JSON: name → list of values.
async fn headers(headers: HeaderMap) -> impl IntoResponse {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &headers {
        map.entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    (
        [("content-type", "application/json")],
        serde_json::to_string(&map).unwrap(),
    )
}

/// Answers with the first chunk of the request body, before the rest came.
async fn first_chunk(body: Body) -> Response {
    use http_body_util::BodyExt;
    let mut body = body;
    let first = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    break data;
                }
            }
            _ => break Bytes::new(),
        }
    };
    // Keep reading the rest in the background so the connection stays sane.
    tokio::spawn(async move { while body.frame().await.is_some() {} });
    Response::new(Body::from(first))
}

/// `first;`, then `second` once the test opens the gate.
async fn gated(State(seen): State<Arc<Seen>>) -> Response {
    let (tx, rx) = mpsc::channel(2);
    tx.send(Bytes::from_static(b"first;")).await.unwrap();
    tokio::spawn(async move {
        seen.gate.notified().await;
        let _ = tx.send(Bytes::from_static(b"second")).await;
    });
    Response::new(Body::new(Channel(rx)))
}

#[derive(serde::Deserialize)]
struct HoldQuery {
    timeout: Option<u64>,
}

/// Holds on `channel` (Grip-* headers); on timeout: 404 "timeout body".
async fn hold(Path(channel): Path<String>, Query(query): Query<HoldQuery>) -> Response {
    let mut response = (
        [
            ("grip-hold", "response".to_owned()),
            ("grip-channel", channel),
            ("grip-status", "404 Not There".to_owned()),
            ("grip-set-meta", "user=1".to_owned()),
            ("x-upstream", "1".to_owned()),
            ("content-type", "text/plain".to_owned()),
        ],
        "timeout body",
    )
        .into_response();
    if let Some(timeout) = query.timeout {
        response
            .headers_mut()
            .insert("grip-timeout", timeout.to_string().parse().unwrap());
    }
    response
}

/// Holds on `channel` with an application/grip-instruct body.
async fn hold_json(Path(channel): Path<String>, Query(query): Query<HoldQuery>) -> Response {
    let instruct = serde_json::json!({
        "hold": {
            "mode": "response",
            "channels": [{"name": channel}],
            "timeout": query.timeout.unwrap_or(60),
        },
        "response": {
            "code": 408,
            "reason": "Nothing Yet",
            "headers": {"X-Json": "yes"},
            "body": "json timeout body",
        },
    });
    (
        [("content-type", "application/grip-instruct")],
        instruct.to_string(),
    )
        .into_response()
}

/// Holds on `feed` with `prev-id`; a retry with Grip-Last is answered.
async fn prev(
    State(seen): State<Arc<Seen>>,
    Path(prev): Path<String>,
    headers: HeaderMap,
) -> Response {
    seen.prev_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(last) = headers.get("grip-last") {
        return format!("caught up: {}", last.to_str().unwrap()).into_response();
    }
    (
        [
            ("grip-hold", "response".to_owned()),
            ("grip-channel", format!("feed; prev-id={prev}")),
        ],
        "no news",
    )
        .into_response()
}

async fn multi() -> Response {
    ([("grip-hold", "response"), ("grip-channel", "m1, m2")], "").into_response()
}

async fn gone() -> Response {
    (
        [
            ("grip-hold", "response"),
            ("grip-channel", "gone-ch"),
            ("grip-link", "</gone-hook?who=1>; rel=gone"),
        ],
        "",
    )
        .into_response()
}

async fn gone_hook(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> StatusCode {
    if headers.contains_key("grip-sig") {
        seen.gone_hooks_signed.fetch_add(1, Ordering::SeqCst);
    }
    seen.gone_hooks.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

/// Switches to an echo protocol: every byte sent comes back.
async fn ws(mut request: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap()
}

async fn bad_grip() -> Response {
    ([("grip-hold", "streaming"), ("grip-channel", "x")], "").into_response()
}
