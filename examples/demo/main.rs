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
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Parser;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpSocket;
use tower_longpoll::Hub;

/// Serves long-polls on /poll/{client}, publishes with POST
/// /publish/{client}, Prometheus metrics on /metrics, a page on / and its
/// browser client on /longpoll.js.
#[derive(Parser, Debug)]
#[command(name = "demo", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
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
    /// Keep events in Redis at this URL (redis://host:port), shared with other
    /// nodes started with the same URL and prefix. Needs the `redis` feature:
    /// `cargo run --release --features redis --example demo -- --redis URL`.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// The prefix of the Redis keys and channels.
    #[arg(long, default_value = "longpoll", requires = "redis")]
    redis_prefix: String,
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
    if !(args.timeout.is_finite() && args.timeout >= 0.0) {
        eprintln!("--timeout must be a non-negative number of seconds");
        std::process::exit(2);
    }

    let hub = match &args.redis {
        None => Hub::new(),
        Some(url) => redis_hub(url, &args.redis_prefix).await,
    };
    let options = app::Options {
        timeout: Duration::from_secs_f64(args.timeout),
        max_per_id: args.max_per_id,
        max_waiters: args.max_waiters,
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
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "listening beyond loopback: anyone who can reach it may publish");
    }

    // A client that vanishes without FIN or RST is only noticed by TCP
    // keepalive (or its poll timeout).
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let listener = listener.tap_io(move |tcp| {
        let socket = SockRef::from(&*tcp);
        if let Err(err) = socket
            .set_tcp_keepalive(&keepalive)
            .and_then(|()| socket.set_tcp_nodelay(true))
        {
            tracing::debug!(error = %err, "could not set TCP options on a connection");
        }
    });

    let stopping = hub.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: answering parked polls with 503");
            stopping.shutdown();
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// A hub whose events live in Redis; exits with a clear message when Redis
/// cannot be reached.
#[cfg(feature = "redis")]
async fn redis_hub(url: &str, prefix: &str) -> Hub {
    match tower_longpoll::store::RedisStore::builder(url)
        .prefix(prefix)
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
async fn redis_hub(_url: &str, _prefix: &str) -> Hub {
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
