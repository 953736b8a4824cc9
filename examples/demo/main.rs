//! The tower-longpoll demo server: long-polling, publishing, metrics and a
//! small page, in memory.
//!
//! ```text
//! cargo run --release --example demo                  # http://127.0.0.1:3000
//! curl -i localhost:3000/poll/alice                   # waits for an event
//! curl -i -X POST -H 'content-type: application/json' \
//!      -d '{"hello":"alice"}' localhost:3000/publish/alice
//! curl localhost:3000/metrics
//! ```
//!
//! It binds to loopback unless told otherwise: publishing is open to
//! whoever can reach it.

mod app;
mod connections;

/// jemalloc keeps its bookkeeping out of the blocks it hands out, so the
/// 8 KiB buffers hyper reserves for each connection cost no resident memory
/// until they are written: a held HTTP/1 poll costs about 30 % less than
/// with glibc's malloc (docs/benchmarks.md has the figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background thread hands pages
/// freed by closed connections back to the system within about 1 s,
/// instead of after 10 s and only when something else allocates; so RSS
/// follows the connections held, also under churn. With 2 s, RSS read 2.5 s
/// after thousands of connections closed still held up to 1.4 MB of their
/// pages, more or less from one reading to the next; 1 s costs fan-out no
/// measurable CPU (docs/benchmarks.md, issue 16, second round).
///
/// `slab_sizes`: hyper's two 8 KiB buffers per connection each took a slab
/// of their own, and so jemalloc's bookkeeping of a slab (about 700 bytes
/// per held poll); slabs of 16 pages hold eight such buffers (66 bytes per
/// held poll; docs/benchmarks.md, issue 16, third round).
// SAFETY: jemalloc reads this NUL-terminated string once, at its start.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub(crate) static MALLOC_CONF: &u8 =
    &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,slab_sizes:4097-16384:16\0"[0];

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{Request, Response};
use clap::Parser;
use futures_util::FutureExt;
use futures_util::future::Either;
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tower_longpoll::store::MemoryStore;
use tower_longpoll::{Hub, LongPoll};

use crate::connections::Connections;

/// Serves long-polls on /poll/{client}, publishes with POST
/// /publish/{client}, Prometheus metrics on /metrics, a page on / and its
/// browser client on /longpoll.js (the crate's, `tower_longpoll::browser`).
#[derive(Parser, Debug)]
#[command(name = "demo", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    /// Beyond loopback, set --publish-token: publishing is open otherwise.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Seconds a poll waits for an event before the keepalive (204).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Most polls parked at once on one client id (raise it to use an id as a
    /// broadcast channel).
    #[arg(long, default_value_t = 8)]
    max_per_id: usize,
    /// Most polls parked at once in all.
    #[arg(long, default_value_t = 100_000)]
    max_waiters: usize,
    /// Most client ids kept in memory; the least recently active idle ones
    /// make room for new ones.
    #[arg(long, default_value_t = 1_000_000)]
    max_ids: usize,
    /// Seconds an event is kept for clients that come back.
    #[arg(long, default_value_t = 300.0)]
    event_ttl: f64,
    /// Seconds an id with no activity is kept, with its log.
    #[arg(long, default_value_t = 600.0)]
    id_ttl: f64,
    /// When set, POST /publish/{client} needs `Authorization: Bearer TOKEN`
    /// (401 otherwise). Also read from DEMO_PUBLISH_TOKEN.
    #[arg(
        long,
        env = "DEMO_PUBLISH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    publish_token: Option<String>,
    /// Seconds a client has to send its request head (slowloris guard).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a publish body has to arrive (408 after).
    #[arg(long, default_value_t = 10.0)]
    body_timeout: f64,
    /// Seconds a response write may stay blocked by a client that does not
    /// read before the connection is closed.
    #[arg(long, default_value_t = 30.0)]
    write_timeout: f64,
    /// Keep events in Redis at this URL, shared with other nodes started with
    /// the same URL and prefix: redis://host:port, a cluster as
    /// redis-cluster://host:port?node=host:port, or a Sentinel-managed primary
    /// as redis-sentinel://host:port?sentinelServiceName=NAME. Needs the `redis` feature:
    /// `cargo run --release --features redis --example demo -- --redis URL`;
    /// rediss:// (TLS) needs `--features redis-tls` and is refused without it.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Lets pages on ORIGIN (scheme://host[:port], as browsers send it in
    /// `Origin`) poll and publish across origins: answers carry the CORS
    /// headers for it, preflights are answered. Repeatable; `*` allows any
    /// origin, without credentials (cookies); named origins may send them.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = app::parse_origin)]
    allow_origin: Vec<axum::http::HeaderValue>,
    /// The prefix of the Redis keys and channels.
    #[arg(long, default_value = "longpoll", requires = "redis")]
    redis_prefix: String,
    /// Acknowledge a publish only once N replicas of the Redis primary have
    /// it (Redis WAIT, at most 1 s), so that a failover loses no
    /// acknowledged event; 0: replication is asynchronous.
    #[arg(long, default_value_t = 0, value_name = "N", requires = "redis")]
    redis_wait_replicas: u32,
    /// Serve the same routes without the long-poll layer: a baseline for
    /// what the layer costs the requests it passes on (bench/compare.sh).
    #[arg(long)]
    no_layer: bool,
    /// Runtime worker threads (default: one per core); 1 runs everything on
    /// one thread, as Nchan's single worker does.
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // One worker is a current-thread runtime: no work-stealing queues, and
    // a woken poll runs on the thread that woke it.
    let mut runtime = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(workers.max(1));
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_longpoll=info".into()),
        )
        .init();
    let timeouts = Timeouts {
        header: seconds("--header-timeout", args.header_timeout),
        write: seconds("--write-timeout", args.write_timeout),
    };
    let event_ttl = seconds("--event-ttl", args.event_ttl);
    let id_ttl = seconds("--id-ttl", args.id_ttl);
    let hub = match &args.redis {
        None => Hub::builder()
            .store(
                MemoryStore::builder()
                    .max_ids(args.max_ids)
                    .event_ttl(event_ttl)
                    .id_idle_ttl(id_ttl)
                    .build(),
            )
            .build(),
        Some(url) => {
            let store = RedisSettings {
                prefix: &args.redis_prefix,
                event_ttl,
                id_ttl,
                wait_replicas: args.redis_wait_replicas,
            };
            redis_hub(url, store).await
        }
    };
    let options = app::Options {
        timeout: seconds("--timeout", args.timeout),
        max_per_id: args.max_per_id,
        max_waiters: args.max_waiters,
        layer: !args.no_layer,
        publish_token: args.publish_token.clone().filter(|token| !token.is_empty()),
        body_timeout: seconds("--body-timeout", args.body_timeout),
        allow_origins: args.allow_origin.clone(),
        ..app::Options::default()
    };
    // The layer goes around the whole router rather than into it
    // (`Router::layer`): a poll is answered before axum routes it, and the
    // other requests pass the layer once. CORS must be outside it, and
    // tower-http's `Cors` wants a response body with a `Default`: then the
    // layers go on the router, which gives every response axum's body.
    let app = if !options.layer {
        App::Routes(app::routes(hub.clone(), &options))
    } else if !options.allow_origins.is_empty() {
        App::Routes(app::router(hub.clone(), &options))
    } else {
        // The router's futures boxed: inline, they would size the layer's
        // response future, which hyper keeps for as long as a poll waits.
        let routes = Routes(app::routes(hub.clone(), &options));
        App::Polls(app::longpoll(hub.clone(), &options).layer(routes))
    };

    let socket = if args.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // A client that vanishes without FIN or RST is only noticed by TCP
    // keepalive (or its poll timeout).
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    // Linux gives every accepted connection the listener's keepalive and
    // `TCP_NODELAY`: set once here, they save five system calls on each new
    // connection (the churn figure of docs/benchmarks.md). Elsewhere they
    // are set on each connection.
    let inherited = cfg!(target_os = "linux") && {
        let listening = SockRef::from(&socket);
        match listening
            .set_tcp_keepalive(&keepalive)
            .and_then(|()| listening.set_tcp_nodelay(true))
        {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(error = %err, "could not set TCP options on the listener");
                false
            }
        }
    };
    socket.bind(args.listen)?;
    // mio's default backlog of 128 drops bursts of thousands of new polls.
    let listener = socket.listen(4096)?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    if !options.allow_origins.is_empty() {
        let origins: Vec<&str> = options
            .allow_origins
            .iter()
            .filter_map(|origin| origin.to_str().ok())
            .collect();
        tracing::info!(origins = ?origins, "pages on these origins may poll and publish (CORS)");
    }
    match (local.ip().is_loopback(), options.publish_token.is_some()) {
        (_, true) => tracing::info!(%local, "publishing needs the publish token"),
        (true, false) => {
            tracing::info!(%local, "bound to loopback only; publishing is open to local clients")
        }
        (false, false) => tracing::warn!(
            %local,
            "listening beyond loopback without --publish-token: anyone who can reach it may publish"
        ),
    }

    let connections = Connections::default();
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if !inherited {
            let socket = SockRef::from(&tcp);
            if let Err(err) = socket
                .set_tcp_keepalive(&keepalive)
                .and_then(|()| socket.set_tcp_nodelay(true))
            {
                tracing::debug!(error = %err, "could not set TCP options on a connection");
            }
        }
        tokio::spawn(serve(tcp, app.clone(), timeouts, connections.clone()));
    }
    tracing::info!("shutting down: answering parked polls with 503");
    hub.shutdown();
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), connections.stop())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How the demo's Redis store is set up.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct RedisSettings<'a> {
    prefix: &'a str,
    event_ttl: Duration,
    id_ttl: Duration,
    wait_replicas: u32,
}

/// A hub whose events live in Redis; exits with a clear message when Redis
/// cannot be reached.
#[cfg(feature = "redis")]
async fn redis_hub(url: &str, settings: RedisSettings<'_>) -> Hub {
    match tower_longpoll::store::RedisStore::builder(url)
        .prefix(settings.prefix)
        .event_ttl(settings.event_ttl)
        .id_idle_ttl(settings.id_ttl)
        .wait_for_replicas(settings.wait_replicas, Duration::from_secs(1))
        .connect()
        .await
    {
        Ok(store) => Hub::builder().store(store).build(),
        Err(err) => {
            eprintln!("demo: {err}");
            std::process::exit(1);
        }
    }
}

#[cfg(not(feature = "redis"))]
async fn redis_hub(_url: &str, _settings: RedisSettings<'_>) -> Hub {
    eprintln!(
        "demo: --redis needs the redis feature: cargo run --release --features redis --example demo -- --redis URL"
    );
    std::process::exit(2);
}

/// The demo's routes, with their futures boxed. Cloned for each request as
/// the router is (a reference count), without an allocation.
#[derive(Clone)]
struct Routes(Router);

impl Service<Request<Incoming>> for Routes {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<Incoming>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// The app served: the routes behind the long-poll layer; or a router that
/// has its layers inside (CORS), or none (`--no-layer`).
#[derive(Clone)]
enum App {
    Polls(LongPoll<Routes>),
    Routes(Router),
}

/// How long slow clients are waited for.
#[derive(Clone, Copy)]
struct Timeouts {
    /// For the request head (and the HTTP/2 preface).
    header: Duration,
    /// For a response write blocked by a client that does not read.
    write: Duration,
}

fn seconds(flag: &str, value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or_else(|_| {
        eprintln!("demo: {flag} must be a non-negative number of seconds");
        std::process::exit(2);
    })
}

/// Serves one connection: HTTP/2 when it opens with the HTTP/2 preface
/// (cleartext, prior knowledge), HTTP/1.1 otherwise.
///
/// The connection is served by hyper's own HTTP/1 or HTTP/2 connection
/// rather than axum::serve: axum rebuilds the router's route tables for every
/// connection, and hyper-util's auto-detection makes hyper's read buffer grow
/// to 16 KiB; a parked poll holds its connection, so both add up per poll.
/// For the same reason this future, the task of the connection, is kept
/// small: what only HTTP/2 needs is boxed (docs/benchmarks.md, issue 16).
///
/// Combinators rather than an `async fn`: the connection's future then takes
/// the place of the sniffing one, instead of coming on top of it and of the
/// arguments, which an `async fn` keeps for as long as it runs.
fn serve(
    tcp: TcpStream,
    app: App,
    timeouts: Timeouts,
    connections: Connections,
) -> impl Future<Output = ()> + Send {
    sniff_http2(tcp, timeouts.header).then(move |(tcp, http2)| match (http2, app) {
        (Err(_), _) => Either::Left(std::future::ready(())),
        (Ok(http2), App::Polls(service)) => Either::Right(Either::Left(serve_with(
            tcp,
            http2,
            service,
            timeouts,
            connections,
        ))),
        (Ok(http2), App::Routes(service)) => Either::Right(Either::Right(serve_with(
            tcp,
            http2,
            service,
            timeouts,
            connections,
        ))),
    })
}

/// The connection's future, built here rather than in an `async fn` so that
/// it does not also carry this function's arguments while it runs.
fn serve_with<S, B>(
    tcp: TcpStream,
    http2: bool,
    service: S,
    timeouts: Timeouts,
    connections: Connections,
) -> impl Future<Output = ()> + Send
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = ToHyper(service);
    // A client that stops reading cannot hold a response write forever.
    let io = TokioIo::new(WriteTimeout::new(tcp, timeouts.write));
    let connection = if http2 {
        let connection = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Every parked poll holds a stream.
            .max_concurrent_streams(1024)
            .serve_connection(io, service);
        // Boxed: inline, hyper's HTTP/2 connection (1.5 KB) would size this
        // future, and so the task of every HTTP/1 connection.
        Either::Left(Box::pin(connections.track(connection)))
    } else {
        let connection = http1::Builder::new()
            // Without a timer hyper cannot time out a request head that
            // never ends.
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .serve_connection(io, service);
        Either::Right(connections.track(connection))
    };
    // `map`, not an async block: that would hold the future twice, as the
    // block's capture and as the future it awaits.
    connection.map(|result| {
        if let Err(err) = result {
            if write_stalled(&err) {
                app::STALLED_WRITES.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(error = %err, "connection ended with an error");
        }
    })
}

/// A tower service as hyper's, for a service that is always ready, as the
/// demo's are: its future is then the service's own. hyper-util's adapter
/// makes every future hold the request until the service is ready, which
/// adds 300 bytes to each request hyper keeps in flight, so to each parked
/// poll. A service found not ready is called once it is, as there.
#[derive(Clone)]
struct ToHyper<S>(S);

impl<S> hyper::service::Service<Request<Incoming>> for ToHyper<S>
where
    S: Service<Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Pin<Box<tower::util::Oneshot<S, Request<Incoming>>>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut service = self.0.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Either::Left(service.call(request)),
            _ => Either::Right(Box::pin(tower::util::Oneshot::new(service, request))),
        }
    }
}

/// Whether a connection ended because the write guard gave up: the
/// [`WriteTimeout`] reports a blocked write as an I/O error of kind
/// `TimedOut`, somewhere in hyper's error chain.
fn write_stalled(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A connection whose writes fail with `TimedOut` once one has stayed blocked
/// for `timeout`: a client that stops reading cannot hold a response write
/// forever.
///
/// Its timer is made the first time a write blocks, which most connections
/// never do: a parked poll's connection carries no timer, and the stream is
/// `Unpin`, so it sits inside hyper's connection instead of a box of its own.
struct WriteTimeout {
    tcp: TcpStream,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the write blocked now.
    armed: bool,
}

impl WriteTimeout {
    fn new(tcp: TcpStream, timeout: Duration) -> Self {
        WriteTimeout {
            tcp,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Passes on a write's result; while the write is blocked, runs the
    /// timer from when it first blocked, and fails the write once it fires.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.armed = false;
            return result;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.tcp).poll_flush(cx);
        self.guard(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.guard(cx, result)
    }
}

/// Whether the client opened with the HTTP/2 preface, peeked, not read.
/// The connection is handed back with the answer.
async fn sniff_http2(tcp: TcpStream, patience: Duration) -> (TcpStream, io::Result<bool>) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let mut start = [0u8; 4];
    let wait = async {
        loop {
            let n = tcp.peek(&mut start).await?;
            let seen = &start[..n];
            if n == 0 || n == start.len() || !PREFACE.starts_with(seen) {
                return Ok(n == start.len() && PREFACE.starts_with(seen));
            }
            // A prefix of the preface so far: wait for the rest.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let http2 = tokio::time::timeout(patience, wait)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    (tcp, http2)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
