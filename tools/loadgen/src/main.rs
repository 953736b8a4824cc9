//! A load generator for long-poll servers: ours, Nchan, Pushpin, or any
//! server whose poll and publish URLs fit a template.
//!
//! ```text
//! cargo build --release -p longpoll-loadgen
//! target/release/loadgen --sub-url 'http://127.0.0.1:3000/poll/{id}' \
//!         --pub-url 'http://127.0.0.1:3000/publish/{id}' \
//!         --cursor since --parked-url http://127.0.0.1:3000/metrics \
//!         --parked-key longpoll_waiters --pid "$SERVER_PID" \
//!         fanout 10000 --rounds 3
//! ```
//!
//! Scenarios (each prints one final JSON line on stdout; progress goes to
//! stderr):
//! - `hold N`: N polls parked on their own ids; the server's anonymous RSS
//!   per held poll and its CPU while they sit idle. `--http2` carries them as
//!   streams over `--h2-conns` connections.
//! - `fanout N`: N polls on one id, one publish per round; the time until
//!   each poll has its response (p50/p99/max). Every poll must get it.
//! - `unicast N RATE`: N polls on their own ids, RATE publishes a second to
//!   random ids; publish→receive latency (p50/p99/p999) and the events lost.
//! - `churn N C`: N polls connected and aborted with RST, C times; the
//!   server's RSS after each cycle and its parked count afterwards.
//! - `grip-backend`: a tiny GRIP backend for Pushpin: answers every request
//!   with `Grip-Hold: response` on the channel named by the last path segment.
//!
//! Published bodies come from `--pub-body`, where `{id}` is the id and
//! `{msg}` a marker `lg:<seq>:<nanoseconds>` that the subscribers find in
//! what they receive: that is how latency is measured and losses counted,
//! whatever the server wraps around it.
//!
//! Only loopback addresses are accepted. Source addresses are spread over
//! 127.0.0.2 onwards (`--sources`), so that many thousands of connections
//! do not run out of ephemeral ports. Every phase is bounded by
//! `--max-secs`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for long-poll servers (loopback only)"
)]
struct Args {
    /// Poll URL template; `{id}` is replaced by the client id or channel.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000/poll/{id}")]
    sub_url: String,
    /// Publish URL template (POST); `{id}` is replaced.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:3000/publish/{id}"
    )]
    pub_url: String,
    /// Publish body template: `{id}` and `{msg}` (the marker subscribers look for).
    #[arg(long, global = true, default_value = "{msg}")]
    pub_body: String,
    /// Extra publish header, `Name: value`; repeatable.
    #[arg(long = "pub-header", global = true)]
    pub_headers: Vec<String>,
    /// How a poll resumes after a response.
    #[arg(long, global = true, value_enum, default_value_t = CursorMode::None)]
    cursor: CursorMode,
    /// Carry polls as HTTP/2 streams (h2c, prior knowledge).
    #[arg(long, global = true)]
    http2: bool,
    /// HTTP/2 connections to spread the streams over.
    #[arg(long, global = true, default_value_t = 500)]
    h2_conns: usize,
    /// Source addresses to spread HTTP/1 connections over: 127.0.0.2 onwards.
    #[arg(long, global = true, default_value_t = 16)]
    sources: u8,
    /// Connections being opened at once.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// New connections a second at most (0: no limit).
    #[arg(long, global = true, default_value_t = 0)]
    connect_rate: u64,
    /// Server process whose RSS and CPU are read from /proc, with its
    /// descendants; repeatable (summed).
    #[arg(long = "pid", global = true)]
    pids: Vec<u32>,
    /// A URL whose text has a line `<key> <count>` of parked polls (the
    /// demo's /metrics, Nchan's stub status, the GRIP backend's /holds).
    #[arg(long, global = true)]
    parked_url: Option<String>,
    /// The key of that line, e.g. `longpoll_waiters` or `subscribers:`.
    #[arg(long, global = true, default_value = "longpoll_waiters")]
    parked_key: String,
    /// The count only grows (holds issued so far, as the GRIP backend counts).
    #[arg(long, global = true)]
    parked_cumulative: bool,
    /// Extra wait after the polls are parked (or, without --parked-url,
    /// after they are sent), in milliseconds.
    #[arg(long, global = true, default_value_t = 500)]
    settle_ms: u64,
    /// Upper bound on any phase of a scenario, in seconds.
    #[arg(long, global = true, default_value_t = 120)]
    max_secs: u64,
    /// Prefix of the ids, so that runs do not meet each other's events.
    #[arg(long, global = true)]
    id_prefix: Option<String>,
    /// A label copied into the JSON line.
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N polls held on their own ids: RSS per poll, idle CPU.
    Hold {
        n: usize,
        /// Seconds the polls sit idle while CPU is measured.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
    },
    /// N polls on one id, one publish per round: time to each response.
    Fanout {
        n: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// N polls on their own ids, RATE publishes a second to random ids.
    Unicast {
        n: usize,
        rate: u64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Publishing connections.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
    },
    /// N polls connected and aborted with RST, C times.
    Churn {
        n: usize,
        cycles: usize,
        /// Wait after each cycle before RSS is read, in milliseconds (let
        /// the server's allocator hand freed pages back).
        #[arg(long, default_value_t = 2500)]
        rss_settle_ms: u64,
    },
    /// A GRIP backend for Pushpin: holds every request on the channel named by
    /// the last path segment; `/holds` counts the holds issued.
    GripBackend {
        #[arg(long, default_value = "127.0.0.1:7998")]
        listen: SocketAddr,
        /// Grip-Timeout in seconds.
        #[arg(long, default_value_t = 120)]
        hold_secs: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CursorMode {
    /// Poll without a cursor.
    None,
    /// `?since=<ETag without quotes>`.
    Since,
    /// `If-None-Match: <ETag>`.
    IfNoneMatch,
    /// Nchan: `If-None-Match: <Etag>` and `If-Modified-Since: <Last-Modified>`.
    Nchan,
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

fn log(message: impl AsRef<str>) {
    eprintln!(
        "[loadgen {:8.3}s] {}",
        base().elapsed().as_secs_f64(),
        message.as_ref()
    );
}

// ---------------------------------------------------------------- URLs

#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Target {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap_or_else(|_| panic!("the URL needs an IP and a port: {url}"));
    assert!(addr.ip().is_loopback(), "loopback targets only: {url}");
    Target {
        addr,
        authority: authority.to_owned(),
        path: path.to_owned(),
    }
}

fn render(template: &str, id: &str, msg: &str) -> String {
    template.replace("{id}", id).replace("{msg}", msg)
}

// ---------------------------------------------------------------- HTTP/1

/// The parts of a response the scenarios look at.
#[derive(Debug, Default)]
struct Reply {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    body: Vec<u8>,
    close: bool,
}

static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

async fn connect(addr: SocketAddr, sources: u8) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if sources > 0 {
        let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % sources as usize;
        let source = Ipv4Addr::new(127, 0, 0, 2 + n as u8);
        // Each source address has its own range of ephemeral ports.
        socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(addr).await
}

/// An HTTP/1.1 client connection, reconnecting after `Connection: close`.
struct H1 {
    target: Target,
    sources: u8,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl H1 {
    fn new(target: Target, sources: u8) -> Self {
        H1 {
            target,
            sources,
            stream: None,
            buf: Vec::new(),
        }
    }

    async fn ensure(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.target.addr, self.sources).await?);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends a request; the response is read by [`H1::read_reply`].
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<()> {
        self.ensure().await?;
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.target.authority
        );
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if method != "GET" || !body.is_empty() {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let stream = self.stream.as_mut().expect("connected");
        if body.is_empty() {
            stream.write_all(head.as_bytes()).await
        } else {
            let mut all = head.into_bytes();
            all.extend_from_slice(body);
            stream.write_all(&all).await
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<Reply> {
        self.send(method, path, headers, body).await?;
        self.read_reply().await
    }

    async fn fill(&mut self) -> io::Result<()> {
        let stream = self.stream.as_mut().expect("connected");
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(2048);
        }
        let n = stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        let result = self.read_reply_inner().await;
        match &result {
            Ok(reply) if !reply.close => {}
            _ => {
                self.stream = None;
                self.buf.clear();
            }
        }
        result
    }

    async fn read_reply_inner(&mut self) -> io::Result<Reply> {
        let (mut reply, head_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let mut reply = Reply {
                        status: response.code.unwrap_or(0),
                        ..Reply::default()
                    };
                    let mut length = None;
                    let mut chunked = false;
                    for header in response.headers.iter() {
                        let value = String::from_utf8_lossy(header.value).into_owned();
                        match header.name.to_ascii_lowercase().as_str() {
                            "etag" => reply.etag = Some(value),
                            "last-modified" => reply.last_modified = Some(value),
                            "content-length" => length = value.trim().parse::<usize>().ok(),
                            "transfer-encoding" => {
                                chunked = value.to_ascii_lowercase().contains("chunked")
                            }
                            "connection" => reply.close = value.eq_ignore_ascii_case("close"),
                            _ => {}
                        }
                    }
                    if response.version == Some(0) {
                        reply.close = true;
                    }
                    break (reply, head_len, length, chunked);
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
        };
        self.buf.drain(..head_len);
        let no_body = reply.status == 204 || reply.status == 304 || reply.status < 200;
        if no_body {
        } else if chunked {
            loop {
                let line_end = loop {
                    if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break at;
                    }
                    self.fill().await?;
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                })?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill().await?;
                }
                reply
                    .body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            while self.buf.len() < length {
                self.fill().await?;
            }
            reply.body = self.buf.drain(..length).collect();
        } else {
            reply.close = true;
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(err) => return Err(err),
                }
            }
            reply.body = std::mem::take(&mut self.buf);
        }
        Ok(reply)
    }

    /// Aborts the connection with a RST.
    fn reset(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    }
}

// ---------------------------------------------------------------- subscribers

/// Where a subscriber resumes from.
#[derive(Default, Clone)]
struct Position {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Position {
    fn update(&mut self, reply: &Reply) {
        if reply.etag.is_some() {
            self.etag.clone_from(&reply.etag);
        }
        if reply.last_modified.is_some() {
            self.last_modified.clone_from(&reply.last_modified);
        }
    }

    fn request(&self, mode: CursorMode, path: &str) -> (String, Vec<(String, String)>) {
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

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// One poller: an HTTP/1 connection of its own, or a stream on a shared
/// HTTP/2 connection.
enum Subscriber {
    H1(H1),
    H2(H2Sender, Target),
}

impl Subscriber {
    async fn poll(&mut self, path: &str, headers: &[(String, String)]) -> io::Result<Reply> {
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

    fn reset(&mut self) {
        if let Subscriber::H1(conn) = self {
            conn.reset();
        }
    }
}

/// Opens subscribers: HTTP/1 connections, or HTTP/2 connections whose
/// streams the subscribers share.
struct Dialer {
    target: Target,
    http2: bool,
    h2: Vec<H2Sender>,
    next: AtomicUsize,
    sources: u8,
    gate: Arc<Semaphore>,
    rate: u64,
    opened: AtomicU64,
    started: Instant,
}

impl Dialer {
    async fn new(args: &Args) -> io::Result<Arc<Self>> {
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

    fn path(&self, id: &str) -> String {
        render(&self.target.path, id, "")
    }

    /// A subscriber whose first poll is on its way: HTTP/1 connects here,
    /// within the concurrency and rate limits.
    async fn open(&self) -> io::Result<Subscriber> {
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
fn markers(body: &[u8]) -> Vec<(u64, u64)> {
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

/// RSS and CPU of the server's processes, read from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    rss_anon_kb: u64,
    rss_kb: u64,
    cpu_ticks: u64,
    processes: usize,
}

fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(after) = stat.rfind(')') else {
                continue;
            };
            let ppid = stat[after + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0);
            parents.entry(ppid).or_default().push(pid);
        }
    }
    let mut all = roots.to_vec();
    let mut i = 0;
    while i < all.len() {
        if let Some(children) = parents.get(&all[i]) {
            all.extend(children.iter().copied());
        }
        i += 1;
    }
    all
}

fn usage(pids: &[u32]) -> Usage {
    let mut usage = Usage::default();
    for pid in descendants(pids) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        usage.processes += 1;
        for line in status.lines() {
            let kb = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("RssAnon:") {
                usage.rss_anon_kb += kb();
            } else if line.starts_with("VmRSS:") {
                usage.rss_kb += kb();
            }
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(after) = stat.rfind(')') {
                let fields: Vec<&str> = stat[after + 2..].split_whitespace().collect();
                // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name.
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                usage.cpu_ticks += ticks(11) + ticks(12);
            }
        }
    }
    usage
}

const TICKS_PER_SEC: f64 = 100.0;

/// Reads the parked count from `--parked-url`.
async fn parked(args: &Args) -> Option<u64> {
    let url = args.parked_url.as_ref()?;
    let target = parse_url(url);
    let mut conn = H1::new(target.clone(), 0);
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        conn.request(
            "GET",
            &target.path,
            &[("Accept".into(), "text/plain".into())],
            b"",
        ),
    )
    .await
    .ok()?
    .ok()?;
    let text = String::from_utf8_lossy(&reply.body);
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(args.parked_key.as_str())?;
        rest.trim_start_matches([' ', ':', '"', '=', '\t'])
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Waits until the server has `want` polls parked (or, cumulatively, has
/// issued that many holds), bounded by `deadline`; then the settle time.
/// Without a parked URL, waits for the settle time only.
async fn wait_parked(args: &Args, want: u64, deadline: Instant, at_most: bool) -> Option<u64> {
    let mut last = None;
    // A count that only grows cannot show polls leaving.
    let countable = !(at_most && args.parked_cumulative);
    if args.parked_url.is_some() && countable {
        loop {
            last = parked(args).await;
            let reached = match last {
                Some(count) if at_most => count <= want,
                Some(count) if args.parked_cumulative => count >= want,
                Some(count) => count >= want,
                None => false,
            };
            if reached || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    last
}

// ---------------------------------------------------------------- publishing

struct Publisher {
    conn: H1,
    target: Target,
    body: String,
    headers: Vec<(String, String)>,
}

impl Publisher {
    fn new(args: &Args) -> Self {
        let target = parse_url(&args.pub_url);
        let headers = args
            .pub_headers
            .iter()
            .map(|h| {
                let (name, value) = h.split_once(':').expect("--pub-header Name: value");
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        Publisher {
            conn: H1::new(target.clone(), 0),
            target,
            body: args.pub_body.clone(),
            headers,
        }
    }

    /// Publishes message `seq` to `id`; true when the server took it.
    async fn publish(&mut self, id: &str, seq: u64) -> bool {
        let msg = format!("lg:{seq}:{}", now_ns());
        let path = render(&self.target.path, id, "");
        let body = render(&self.body, id, &msg);
        match self
            .conn
            .request("POST", &path, &self.headers, body.as_bytes())
            .await
        {
            Ok(reply) if (200..300).contains(&reply.status) => true,
            Ok(reply) => {
                log(format!(
                    "publish to {id}: status {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body).trim()
                ));
                false
            }
            Err(err) => {
                log(format!("publish to {id}: {err}"));
                false
            }
        }
    }
}

// ---------------------------------------------------------------- statistics

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1e6
}

fn json_f(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".to_owned()
    }
}

fn json_opt(value: Option<u64>) -> String {
    value.map_or("null".to_owned(), |v| v.to_string())
}

fn prefix(args: &Args) -> String {
    args.id_prefix
        .clone()
        .unwrap_or_else(|| format!("lg{:06x}", fastrand::u32(..0xffffff)))
}

// ---------------------------------------------------------------- scenarios

async fn hold(args: &Args, n: usize, idle_secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let before = usage(&args.pids);
    let parked_before = parked(args).await.unwrap_or(0);
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let release = CancellationToken::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let early = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let prefix = prefix(args);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let dialer = Arc::clone(&dialer);
        let release = release.clone();
        let (sent, early, failed) = (sent.clone(), early.clone(), failed.clone());
        let path = dialer.path(&format!("{prefix}-{i}"));
        tasks.push(tokio::spawn(async move {
            let mut subscriber = match dialer.open().await {
                Ok(subscriber) => subscriber,
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let poll = async {
                sent.fetch_add(1, Ordering::Relaxed);
                subscriber.poll(&path, &[]).await
            };
            tokio::select! {
                _ = release.cancelled() => {}
                result = poll => {
                    match result {
                        Ok(_) => early.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    release.cancelled().await;
                }
            }
        }));
    }
    while sent.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log(format!("{} polls sent", sent.load(Ordering::Relaxed)));
    let parked_now = wait_parked(args, parked_before + n as u64, deadline, false).await;
    // Let the server finish what the connects started before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = usage(&args.pids);
    let idle = Duration::from_secs(idle_secs.min(args.max_secs));
    tokio::time::sleep(idle).await;
    let after = usage(&args.pids);
    let idle_cpu = (after.cpu_ticks - held.cpu_ticks) as f64 / TICKS_PER_SEC / idle.as_secs_f64();
    let early = early.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let held_polls = n - early - failed;
    release.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let per_poll = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0 / held_polls.max(1) as f64;
    format!(
        "{{\"scenario\":\"hold\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"held\":{held_polls},\"answered_early\":{early},\"failed\":{failed},\"parked\":{},\"rss_anon_before_kb\":{},\"rss_anon_held_kb\":{},\"bytes_per_poll\":{},\"rss_bytes_per_poll\":{},\"idle_cpu_pct\":{},\"processes\":{}}}",
        args.label,
        args.http2,
        json_opt(parked_now),
        before.rss_anon_kb,
        held.rss_anon_kb,
        json_f(per_poll(held.rss_anon_kb, before.rss_anon_kb)),
        json_f(per_poll(held.rss_kb, before.rss_kb)),
        json_f(idle_cpu * 100.0),
        held.processes,
    )
}

async fn fanout(args: &Args, n: usize, rounds: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let channel = format!("{}-fan", prefix(args));
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let mode = args.cursor;
    // Per round, the receive times.
    let received: Arc<Vec<Mutex<Vec<u64>>>> = Arc::new(
        (0..rounds)
            .map(|_| Mutex::new(Vec::with_capacity(n)))
            .collect(),
    );
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new((0..rounds).map(|_| AtomicUsize::new(0)).collect());
    let keepalives = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let dialer = Arc::clone(&dialer);
        let (received, counts, keepalives, failed) = (
            received.clone(),
            counts.clone(),
            keepalives.clone(),
            failed.clone(),
        );
        let path = dialer.path(&channel);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let run = async {
                let mut subscriber = dialer.open().await?;
                let mut position = Position::default();
                let mut round = 0;
                let mut errors = 0;
                while round < rounds {
                    let (path, headers) = position.request(mode, &path);
                    match subscriber.poll(&path, &headers).await {
                        Ok(reply) => {
                            let at = now_ns();
                            position.update(&reply);
                            if markers(&reply.body).is_empty() {
                                keepalives.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            received[round].lock().unwrap().push(at);
                            counts[round].fetch_add(1, Ordering::Relaxed);
                            round += 1;
                        }
                        Err(err) => {
                            errors += 1;
                            if errors > 3 {
                                return Err(err);
                            }
                        }
                    }
                }
                io::Result::Ok(())
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                result = run => if result.is_err() { failed.fetch_add(1, Ordering::Relaxed); }
            }
        }));
    }
    let mut publisher = Publisher::new(args);
    let mut all = Vec::new();
    let cpu_before = usage(&args.pids).cpu_ticks;
    let mut per_round = String::new();
    let mut complete = true;
    for round in 0..rounds {
        let want = if args.parked_cumulative {
            (n * (round + 1)) as u64
        } else {
            n as u64
        };
        let parked_now = wait_parked(args, want, deadline, false).await;
        log(format!("round {round}: parked {parked_now:?}, publishing"));
        let published_at = now_ns();
        let ok = publisher.publish(&channel, round as u64).await;
        while counts[round].load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut times: Vec<u64> = received[round]
            .lock()
            .unwrap()
            .iter()
            .map(|at| at.saturating_sub(published_at))
            .collect();
        times.sort_unstable();
        let got = times.len();
        complete &= ok && got == n;
        log(format!(
            "round {round}: {got}/{n} in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile_ms(&times, 0.5),
            percentile_ms(&times, 0.99),
            percentile_ms(&times, 1.0)
        ));
        if !per_round.is_empty() {
            per_round.push(',');
        }
        let _ = write!(
            per_round,
            "{{\"received\":{got},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{}}}",
            json_f(percentile_ms(&times, 0.5)),
            json_f(percentile_ms(&times, 0.99)),
            json_f(percentile_ms(&times, 1.0))
        );
        all.extend(times);
    }
    let cpu_ms = (usage(&args.pids).cpu_ticks - cpu_before) as f64 * 1000.0 / TICKS_PER_SEC;
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    all.sort_unstable();
    format!(
        "{{\"scenario\":\"fanout\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"rounds\":{rounds},\"complete\":{complete},\"received\":{},\"expected\":{},\"keepalives\":{},\"failed\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"server_cpu_us_per_response\":{},\"per_round\":[{per_round}]}}",
        args.label,
        args.http2,
        all.len(),
        n * rounds,
        keepalives.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        json_f(percentile_ms(&all, 0.5)),
        json_f(percentile_ms(&all, 0.99)),
        json_f(percentile_ms(&all, 1.0)),
        json_f(cpu_ms * 1000.0 / all.len().max(1) as f64),
    )
}

async fn unicast(args: &Args, n: usize, rate: u64, secs: u64, publishers: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let prefix = prefix(args);
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let mode = args.cursor;
    let total = (rate * secs) as usize;
    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..total).map(|_| AtomicBool::new(false)).collect());
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let delivered = Arc::new(AtomicUsize::new(0));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let dialer = Arc::clone(&dialer);
        let (seen, latencies, delivered, duplicates, failed) = (
            seen.clone(),
            latencies.clone(),
            delivered.clone(),
            duplicates.clone(),
            failed.clone(),
        );
        let path = dialer.path(&format!("{prefix}-{i}"));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let run = async {
                let mut subscriber = dialer.open().await?;
                let mut position = Position::default();
                let mut errors = 0;
                loop {
                    let (path, headers) = position.request(mode, &path);
                    match subscriber.poll(&path, &headers).await {
                        Ok(reply) => {
                            let at = now_ns();
                            position.update(&reply);
                            for (seq, sent) in markers(&reply.body) {
                                let fresh = seen
                                    .get(seq as usize)
                                    .is_some_and(|flag| !flag.swap(true, Ordering::Relaxed));
                                if fresh {
                                    latencies.lock().unwrap().push(at.saturating_sub(sent));
                                    delivered.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    duplicates.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(err) => {
                            errors += 1;
                            if errors > 3 {
                                return io::Result::<()>::Err(err);
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                result = run => if result.is_err() { failed.fetch_add(1, Ordering::Relaxed); }
            }
        }));
    }
    let parked_now = wait_parked(args, n as u64, deadline, false).await;
    log(format!(
        "parked {parked_now:?}; publishing {total} events at {rate}/s"
    ));
    let published = Arc::new(AtomicUsize::new(0));
    let cpu_before = usage(&args.pids).cpu_ticks;
    let started = Instant::now();
    let mut publishing = Vec::new();
    for p in 0..publishers.max(1) {
        let mut publisher = Publisher::new(args);
        let published = published.clone();
        let prefix = prefix.clone();
        let step = publishers.max(1);
        publishing.push(tokio::spawn(async move {
            let mut seq = p;
            while seq < total && Instant::now() < deadline {
                let due = started + Duration::from_secs_f64(seq as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let id = format!("{prefix}-{}", fastrand::usize(..n));
                if publisher.publish(&id, seq as u64).await {
                    published.fetch_add(1, Ordering::Relaxed);
                }
                seq += step;
            }
        }));
    }
    for task in publishing {
        let _ = task.await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let published = published.load(Ordering::Relaxed);
    let drain_until = (Instant::now() + Duration::from_secs(10)).min(deadline);
    while delivered.load(Ordering::Relaxed) < published && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_ms = (usage(&args.pids).cpu_ticks - cpu_before) as f64 * 1000.0 / TICKS_PER_SEC;
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    let delivered = delivered.load(Ordering::Relaxed);
    format!(
        "{{\"scenario\":\"unicast\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"rate\":{rate},\"secs\":{secs},\"publish_secs\":{},\"attempted\":{total},\"published\":{published},\"delivered\":{delivered},\"lost\":{},\"duplicates\":{},\"failed\":{},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"server_cpu_us_per_event\":{}}}",
        args.label,
        args.http2,
        json_f(publish_secs),
        published.saturating_sub(delivered),
        duplicates.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        json_f(percentile_ms(&latencies, 0.5)),
        json_f(percentile_ms(&latencies, 0.99)),
        json_f(percentile_ms(&latencies, 0.999)),
        json_f(percentile_ms(&latencies, 1.0)),
        json_f(cpu_ms * 1000.0 / published.max(1) as f64),
    )
}

async fn churn(args: &Args, n: usize, cycles: usize, rss_settle: Duration) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let prefix = prefix(args);
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let parked_before = parked(args).await.unwrap_or(0);
    let before = usage(&args.pids);
    let mut rss = Vec::new();
    let mut failed = 0;
    let mut answered = 0;
    let churn_start = usage(&args.pids);
    for cycle in 0..cycles {
        let sent = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(n);
        let abort = CancellationToken::new();
        for i in 0..n {
            let dialer = Arc::clone(&dialer);
            let sent = sent.clone();
            let abort = abort.clone();
            let path = dialer.path(&format!("{prefix}-{i}"));
            tasks.push(tokio::spawn(async move {
                let mut subscriber = dialer.open().await.ok()?;
                let outcome = {
                    let poll = async {
                        sent.fetch_add(1, Ordering::Relaxed);
                        subscriber.poll(&path, &[]).await
                    };
                    tokio::select! {
                        _ = abort.cancelled() => None,
                        result = poll => Some(result.is_ok()),
                    }
                };
                subscriber.reset();
                Some(outcome)
            }));
        }
        while sent.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let up = wait_parked(args, parked_before + n as u64, deadline, false).await;
        abort.cancel();
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Some(None))) => {}
                Ok(Ok(Some(Some(_)))) => answered += 1,
                _ => failed += 1,
            }
        }
        let down = wait_parked(args, parked_before, deadline, true).await;
        tokio::time::sleep(rss_settle).await;
        let now = usage(&args.pids);
        log(format!(
            "cycle {cycle}: parked {up:?} then {down:?}, rss_anon {} kB",
            now.rss_anon_kb
        ));
        rss.push(now.rss_anon_kb);
    }
    let after = usage(&args.pids);
    // A count of holds issued so far says nothing about what is left.
    let parked_after = if args.parked_cumulative {
        None
    } else {
        parked(args).await
    };
    let churned = (n * cycles) as f64;
    let cpu_us = (after.cpu_ticks - churn_start.cpu_ticks) as f64 / TICKS_PER_SEC * 1e6 / churned;
    let growth =
        |from: usize| rss.last().copied().unwrap_or(0) as i64 - rss[from.min(rss.len() - 1)] as i64;
    // The trend of RSS over the cycles after the first (warm-up): the median
    // of the slopes between every two cycles (Theil-Sen), which one noisy
    // cycle does not swing.
    let slope = {
        let mut slopes = Vec::new();
        for i in 1..rss.len() {
            for j in i + 1..rss.len() {
                slopes.push((rss[j] as f64 - rss[i] as f64) / (j - i) as f64);
            }
        }
        slopes.sort_by(f64::total_cmp);
        if slopes.is_empty() {
            f64::NAN
        } else if slopes.len() % 2 == 1 {
            slopes[slopes.len() / 2]
        } else {
            (slopes[slopes.len() / 2 - 1] + slopes[slopes.len() / 2]) / 2.0
        }
    };
    format!(
        "{{\"scenario\":\"churn\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"cycles\":{cycles},\"failed\":{failed},\"answered\":{answered},\"rss_anon_before_kb\":{},\"rss_anon_per_cycle_kb\":{:?},\"growth_after_first_kb\":{},\"growth_after_second_kb\":{},\"slope_kb_per_cycle\":{},\"slope_bytes_per_conn\":{},\"parked_after\":{},\"cpu_us_per_conn\":{}}}",
        args.label,
        args.http2,
        before.rss_anon_kb,
        rss,
        growth(0),
        growth(1),
        json_f(slope),
        json_f(slope * 1024.0 / n as f64),
        json_opt(parked_after.map(|p| p.saturating_sub(parked_before))),
        json_f(cpu_us),
    )
}

// ---------------------------------------------------------------- GRIP backend

async fn grip_backend(listen: SocketAddr, hold_secs: u64) -> io::Result<()> {
    use hyper::service::service_fn;
    assert!(listen.ip().is_loopback(), "loopback only");
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let holds = Arc::new(AtomicU64::new(0));
    log(format!("GRIP backend on http://{listen}"));
    loop {
        let (stream, _) = listener.accept().await?;
        let holds = holds.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let holds = holds.clone();
                async move {
                    let path = request.uri().path();
                    let response = if path == "/holds" {
                        http::Response::new(http_body_util::Full::new(Bytes::from(format!(
                            "holds {}\n",
                            holds.load(Ordering::Relaxed)
                        ))))
                    } else {
                        let channel = path.rsplit('/').next().unwrap_or("");
                        holds.fetch_add(1, Ordering::Relaxed);
                        http::Response::builder()
                            .header("Grip-Hold", "response")
                            .header("Grip-Channel", channel)
                            .header("Grip-Timeout", hold_secs.to_string())
                            .header("Content-Type", "text/plain")
                            .body(http_body_util::Full::new(Bytes::from_static(b"timeout\n")))
                            .unwrap()
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() {
    let args = Args::parse();
    base();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let line = runtime.block_on(async {
        match args.scenario {
            Scenario::Hold { n, idle_secs } => hold(&args, n, idle_secs).await,
            Scenario::Fanout { n, rounds } => fanout(&args, n, rounds).await,
            Scenario::Unicast {
                n,
                rate,
                secs,
                publishers,
            } => unicast(&args, n, rate, secs, publishers).await,
            Scenario::Churn {
                n,
                cycles,
                rss_settle_ms,
            } => churn(&args, n, cycles, Duration::from_millis(rss_settle_ms)).await,
            Scenario::GripBackend { listen, hold_secs } => {
                if let Err(err) = grip_backend(listen, hold_secs).await {
                    eprintln!("grip-backend: {err}");
                    std::process::exit(1);
                }
                unreachable!("the backend serves until it is stopped")
            }
        }
    });
    println!("{line}");
    // Connections still open are closed by the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
}
