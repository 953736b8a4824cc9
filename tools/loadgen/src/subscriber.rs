//! Subscribers: one poller each, over HTTP/1 or as a stream of a shared HTTP/2 connection, and the markers they find in bodies.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Semaphore;

use crate::clock::log;
use crate::h1::{H1, Reply, connect};
use crate::target::{Target, parse_url, render};
use crate::{Args, CursorMode};

/// Where a subscriber resumes from.
#[derive(Default, Clone)]
pub(crate) struct Position {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

impl Position {
    pub(crate) fn update(&mut self, reply: &Reply) {
        if reply.etag.is_some() {
            self.etag.clone_from(&reply.etag);
        }
        if reply.last_modified.is_some() {
            self.last_modified.clone_from(&reply.last_modified);
        }
    }

    pub(crate) fn request(&self, mode: CursorMode, path: &str) -> (String, Vec<(String, String)>) {
        let mut headers = Vec::new();
        let mut path = path.to_owned();
        match mode {
            CursorMode::None => {}
            CursorMode::Since => {
                if let Some(etag) = &self.etag {
                    let cursor = etag.trim_start_matches("W/").trim_matches('"');
                    path.push(if path.contains('?') { '&' } else { '?' });
                    path.push_str("since=");
                    path.push_str(cursor);
                }
            }
            CursorMode::IfNoneMatch => {
                if let Some(etag) = &self.etag {
                    headers.push(("If-None-Match".to_owned(), etag.clone()));
                }
            }
            CursorMode::Nchan => {
                if let Some(etag) = &self.etag {
                    headers.push(("If-None-Match".to_owned(), etag.clone()));
                }
                if let Some(modified) = &self.last_modified {
                    headers.push(("If-Modified-Since".to_owned(), modified.clone()));
                }
            }
        }
        (path, headers)
    }
}

pub(crate) type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// One poller: an HTTP/1 connection of its own, or a stream on a shared
/// HTTP/2 connection.
pub(crate) enum Subscriber {
    H1(H1),
    H2(H2Sender, Target),
}

impl Subscriber {
    pub(crate) async fn poll(
        &mut self,
        path: &str,
        headers: &[(String, String)],
    ) -> io::Result<Reply> {
        match self {
            Subscriber::H1(conn) => conn.request("GET", path, headers, b"").await,
            Subscriber::H2(sender, target) => {
                let mut request = http::Request::get(format!("http://{}{path}", target.authority));
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let request = request.body(Empty::new()).map_err(io::Error::other)?;
                sender.ready().await.map_err(io::Error::other)?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(io::Error::other)?;
                let header = |name: http::header::HeaderName| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let mut reply = Reply {
                    status: response.status().as_u16(),
                    etag: header(http::header::ETAG),
                    last_modified: header(http::header::LAST_MODIFIED),
                    ..Reply::default()
                };
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(io::Error::other)?;
                reply.body = body.to_bytes().to_vec();
                Ok(reply)
            }
        }
    }

    pub(crate) fn reset(&mut self) {
        if let Subscriber::H1(conn) = self {
            conn.reset();
        }
    }
}

/// Opens subscribers: HTTP/1 connections, or HTTP/2 connections whose
/// streams the subscribers share.
pub(crate) struct Dialer {
    pub(crate) target: Target,
    pub(crate) http2: bool,
    pub(crate) h2: Vec<H2Sender>,
    pub(crate) next: AtomicUsize,
    pub(crate) sources: u8,
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) rate: u64,
    pub(crate) opened: AtomicU64,
    pub(crate) started: Instant,
}

impl Dialer {
    pub(crate) async fn new(args: &Args) -> io::Result<Arc<Self>> {
        let target = parse_url(&args.sub_url);
        let mut h2 = Vec::new();
        if args.http2 {
            for _ in 0..args.h2_conns {
                let stream = connect(target.addr, args.sources).await?;
                let (sender, connection) =
                    hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_reset_streams(100_000)
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(io::Error::other)?;
                tokio::spawn(connection);
                h2.push(sender);
            }
            log(format!("opened {} HTTP/2 connections", h2.len()));
        }
        Ok(Arc::new(Dialer {
            target,
            http2: args.http2,
            h2,
            next: AtomicUsize::new(0),
            sources: args.sources,
            gate: Arc::new(Semaphore::new(args.connect_concurrency.max(1))),
            rate: args.connect_rate,
            opened: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    pub(crate) fn path(&self, id: &str) -> String {
        render(&self.target.path, id, "")
    }

    /// A subscriber whose first poll is on its way: HTTP/1 connects here,
    /// within the concurrency and rate limits.
    pub(crate) async fn open(&self) -> io::Result<Subscriber> {
        if self.http2 {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % self.h2.len();
            return Ok(Subscriber::H2(self.h2[n].clone(), self.target.clone()));
        }
        let _permit = self.gate.acquire().await.expect("open");
        if self.rate > 0 {
            let n = self.opened.fetch_add(1, Ordering::Relaxed);
            let due = self.started + Duration::from_secs_f64(n as f64 / self.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut conn = H1::new(self.target.clone(), self.sources);
        conn.ensure().await?;
        Ok(Subscriber::H1(conn))
    }
}

/// Markers `lg:<seq>:<ns>` in a body.
pub(crate) fn markers(body: &[u8]) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(3).position(|w| w == b"lg:") {
        rest = &rest[at + 3..];
        let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
        let a = digits(rest);
        if a == 0 || rest.get(a) != Some(&b':') {
            continue;
        }
        let b = digits(&rest[a + 1..]);
        if b == 0 {
            continue;
        }
        let seq = std::str::from_utf8(&rest[..a])
            .unwrap()
            .parse()
            .unwrap_or(0);
        let ns = std::str::from_utf8(&rest[a + 1..a + 1 + b])
            .unwrap()
            .parse()
            .unwrap_or(0);
        found.push((seq, ns));
        rest = &rest[a + 1 + b..];
    }
    found
}

// ---------------------------------------------------------------- the server
