//! `longpoll-gateway`: a reverse proxy that holds long-polls, compatible with
//! GRIP (Pushpin's protocol), built on tower-longpoll's hub and layer.
//!
//! ```text
//! longpoll-gateway --upstream http://127.0.0.1:8000 --sig-key secret \
//!     --publish-key secret --route '/poll/{client}'
//! ```
//!
//! See `docs/gateway.md` for the GRIP subset, the differences from Pushpin
//! and how to migrate; `--help` for every setting.

#![deny(unsafe_code)]

/// jemalloc keeps its bookkeeping out of the blocks it hands out, so the
/// buffers hyper reserves for each held connection cost no resident memory
/// until they are written (docs/benchmarks.md has the figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background thread hands pages
/// freed by closed connections back to the system within about 2 s, so RSS
/// follows the connections held, also under churn.
// SAFETY: jemalloc reads this NUL-terminated string once, at its start.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:2000,muzzy_decay_ms:0\0"[0];

mod config;
mod grip;
mod headers;
mod hold;
mod items;
mod jwt;
#[cfg(test)]
mod parse_checks;
mod proxy;
mod publish;
mod server;
mod state;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use tokio_util::sync::CancellationToken;
use tower_longpoll::store::RedisStore;
use tower_longpoll::{Hub, LongPoll};
use tower_service::Service;

use crate::config::{Args, Config, LogFormat};
use crate::proxy::{Gateway, ProxyBody, Upstream};
use crate::server::Handler;
use crate::state::{Channels, Metrics, State};

/// Channels whose last published id is remembered for `prev-id` checks.
const REMEMBERED_CHANNELS: usize = 1_000_000;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("longpoll-gateway: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("longpoll-gateway: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("longpoll-gateway: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
        None => None,
    };
    let client_listener = server::bind(config.listen)
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    let publish_listener = server::bind(config.publish_listen)
        .map_err(|err| format!("cannot listen on {}: {err}", config.publish_listen))?;
    let client_addr = client_listener
        .local_addr()
        .map_err(|err| err.to_string())?;
    let publish_addr = publish_listener
        .local_addr()
        .map_err(|err| err.to_string())?;

    let sig_key = config.sig_key.clone().unwrap_or_else(|| {
        tracing::warn!(
            "no --sig-key: Grip-Sig is signed with a random key, which backends cannot verify"
        );
        (0..32).map(|_| fastrand::u8(..)).collect()
    });
    if config.publish_token.is_none()
        && config.publish_key.is_none()
        && !publish_addr.ip().is_loopback()
    {
        tracing::warn!(%publish_addr, "the publish API is open (no --publish-token or --publish-key) beyond loopback");
    }
    let hub = match &config.redis {
        None => Hub::new(),
        Some((url, prefix)) => {
            let store = RedisStore::builder(url)
                .prefix(prefix)
                .connect()
                .await
                .map_err(|err| err.to_string())?;
            Hub::builder().store(store).build()
        }
    };
    let upstream = Upstream::new(
        config.upstream.clone(),
        sig_key,
        config.sig_iss.clone(),
        config.connect_timeout,
        config.upstream_timeout,
    );
    let state = Arc::new(State {
        hub: hub.clone(),
        upstream,
        channels: Channels::new(REMEMBERED_CHANNELS),
        metrics: Metrics::default(),
        config: config.clone(),
    });

    let gateway = Gateway {
        state: Arc::clone(&state),
    };
    let client_handler: Handler = match config.poll_layer(hub.clone()) {
        None => Arc::new(move |request: Request<Incoming>| {
            let mut gateway = gateway.clone();
            Box::pin(async move {
                match gateway.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
        }),
        Some(layer) => {
            let held: LongPoll<Gateway> = tower_layer::Layer::layer(&layer, gateway);
            Arc::new(move |request: Request<Incoming>| {
                let mut held = held.clone();
                Box::pin(async move {
                    // Readiness is the gateway's, which is always ready.
                    let response: Response<_> = match held.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    response.map(|body| -> ProxyBody { body.boxed_unsync() })
                })
            })
        }
    };
    let publish_state = Arc::clone(&state);
    let publish_handler: Handler = Arc::new(move |request: Request<Incoming>| {
        Box::pin(publish::handle(Arc::clone(&publish_state), request))
    });

    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{client_addr}");
    println!("publish API on http://{publish_addr}");
    tracing::info!(%client_addr, %publish_addr, upstream = %config.upstream, routes = ?config.routes, "longpoll-gateway started");

    let stop = CancellationToken::new();
    let signals = {
        let stop = stop.clone();
        let hub = hub.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: answering held requests with 503");
            hub.shutdown();
            stop.cancel();
        })
    };
    let graceful = GracefulShutdown::new();
    tokio::join!(
        server::serve(
            client_listener,
            tls,
            client_handler,
            stop.clone(),
            &graceful
        ),
        server::serve(
            publish_listener,
            None,
            publish_handler,
            stop.clone(),
            &graceful
        ),
    );
    signals.abort();
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "connections still open after the grace period; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
