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

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpSocket;
use tokio_io_timeout::TimeoutStream;
use tower_longpoll::Hub;
use tower_longpoll::store::MemoryStore;

/// Serves long-polls on /poll/{client}, publishes with POST
/// /publish/{client}, Prometheus metrics on /metrics, a page on / and its
/// browser client on /longpoll.js.
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
    /// Keep events in Redis at this URL (redis://host:port), shared with other
    /// nodes started with the same URL and prefix. Needs the `redis` feature:
    /// `cargo run --release --features redis --example demo -- --redis URL`.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// The prefix of the Redis keys and channels.
    #[arg(long, default_value = "longpoll", requires = "redis")]
    redis_prefix: String,
}

fn seconds(flag: &str, value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or_else(|_| {
        eprintln!("demo: {flag} must be a non-negative number of seconds");
        std::process::exit(2);
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_longpoll=info".into()),
        )
        .init();
    let args = Args::parse();
    let timeout = seconds("--timeout", args.timeout);
    let header_timeout = seconds("--header-timeout", args.header_timeout);
    let write_timeout = seconds("--write-timeout", args.write_timeout);

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
        Some(url) => redis_hub(url, &args.redis_prefix, event_ttl, id_ttl).await,
    };
    let options = app::Options {
        timeout,
        max_per_id: args.max_per_id,
        max_waiters: args.max_waiters,
        publish_token: args.publish_token.clone().filter(|token| !token.is_empty()),
        body_timeout: seconds("--body-timeout", args.body_timeout),
        ..app::Options::default()
    };
    let app = app::router(hub.clone(), &options);

    let socket = if args.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(args.listen)?;
    // mio's default backlog of 128 drops bursts of thousands of new polls.
    let listener = socket.listen(4096)?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    match (local.ip().is_loopback(), options.publish_token.is_some()) {
        (_, true) => tracing::info!(%local, "publishing needs the publish token"),
        (true, false) => {
            tracing::info!(%local, "bound to loopback only; publishing is open to local clients")
        }
        (false, false) => {
            tracing::warn!(%local, "listening beyond loopback without --publish-token: anyone who can reach it may publish")
        }
    }

    // A client that vanishes without FIN or RST is only noticed by TCP
    // keepalive (or its poll timeout).
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let mut server = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper cannot time out a request head that never ends.
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    server.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut signal = pin!(shutdown_signal());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: back off a little.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let socket = SockRef::from(&stream);
        if let Err(err) = socket
            .set_tcp_keepalive(&keepalive)
            .and_then(|()| socket.set_tcp_nodelay(true))
        {
            tracing::debug!(error = %err, "could not set TCP options on a connection");
        }
        // A client that stops reading cannot hold a response write forever.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(write_timeout));
        let connection = server
            .serve_connection_with_upgrades(
                TokioIo::new(Box::pin(stream)),
                TowerToHyperService::new(app.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: answering parked polls with 503");
    hub.shutdown();
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 10 s; leaving them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// A hub whose events live in Redis; exits with a clear message when Redis
/// cannot be reached.
#[cfg(feature = "redis")]
async fn redis_hub(url: &str, prefix: &str, event_ttl: Duration, id_ttl: Duration) -> Hub {
    match tower_longpoll::store::RedisStore::builder(url)
        .prefix(prefix)
        .event_ttl(event_ttl)
        .id_idle_ttl(id_ttl)
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
async fn redis_hub(_url: &str, _prefix: &str, _event_ttl: Duration, _id_ttl: Duration) -> Hub {
    eprintln!(
        "demo: --redis needs the redis feature: cargo run --release --features redis --example demo -- --redis URL"
    );
    std::process::exit(2);
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
