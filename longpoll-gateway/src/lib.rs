//! `longpoll-gateway`: a reverse proxy that holds long-polls, compatible with
//! GRIP (Pushpin's protocol), built on tower-longpoll's hub and layer.
//!
//! This library is the gateway itself; the `longpoll-gateway` binary parses
//! its settings ([`Args`], [`Config::load`]) and calls [`run`]. See the
//! crate's README for the GRIP subset, the differences from Pushpin and how
//! to migrate; `longpoll-gateway --help` for every setting.

#![deny(unsafe_code)]
#![deny(missing_docs)]

#[doc(hidden)]
pub mod config;
mod gone;
#[doc(hidden)]
pub mod grip;
#[doc(hidden)]
pub mod headers;
mod hold;
#[doc(hidden)]
pub mod http_stream;
#[doc(hidden)]
pub mod items;
#[doc(hidden)]
pub mod jwt;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod parse_checks;
mod proxy;
mod publish;
mod reply;
mod routes;
mod server;
mod state;
#[doc(hidden)]
pub mod stream;
mod upstream;
#[doc(hidden)]
pub mod ws;

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use tokio_util::sync::CancellationToken;
use tower_longpoll::store::RedisStore;
use tower_longpoll::{Hub, LongPoll};
use tower_service::Service;

pub use crate::config::{Args, Config, LogFormat};
use crate::proxy::Gateway;
use crate::reply::ProxyBody;
use crate::server::Handler;
use crate::state::{Channels, Metrics, State};
use crate::stream::Streams;
use crate::upstream::Upstream;

/// Channels whose last published id is remembered for `prev-id` checks.
const REMEMBERED_CHANNELS: usize = 1_000_000;

/// Runs the gateway with `config` until SIGINT or SIGTERM: binds its
/// listeners, prints `listening on http(s)://ADDR` and `publish API on
/// http://ADDR` on stdout, serves, and on a signal answers every held request
/// before it returns. Must be called inside a multi-threaded tokio runtime.
pub async fn run(config: Config) -> Result<(), String> {
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
    // How long a publish waits for the replicas --redis-wait-replicas asks for.
    const REDIS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
    let hub = match &config.redis {
        None => Hub::new(),
        Some((url, prefix)) => {
            let store = RedisStore::builder(url)
                .wait_for_replicas(config.redis_wait_replicas, REDIS_WAIT)
                .prefix(prefix)
                .connect()
                .await
                .map_err(|err| err.to_string())?;
            Hub::builder().store(store).build()
        }
    };
    // The stream log: http-stream items, apart from the events of response
    // holds and --route polls (which would otherwise get them), in Redis
    // beside them when there is one.
    let stream_hub =
        Hub::builder().max_event_bytes(http_stream::MAX_CONTENT + http_stream::MAX_OVERHEAD);
    let stream_hub = match &config.redis {
        None => stream_hub.build(),
        Some((url, prefix)) => {
            let store = RedisStore::builder(url)
                .wait_for_replicas(config.redis_wait_replicas, REDIS_WAIT)
                .prefix(format!("{prefix}:stream"))
                .connect()
                .await
                .map_err(|err| err.to_string())?;
            stream_hub.store(store).build()
        }
    };
    // The socket log: ws-message items, for the WebSocket-over-HTTP sockets
    // of every gateway on the same Redis.
    let socket_hub = Hub::builder().max_event_bytes(items::MAX_EVENT + 64);
    let socket_hub = match &config.redis {
        None => socket_hub.build(),
        Some((url, prefix)) => {
            let store = RedisStore::builder(url)
                .wait_for_replicas(config.redis_wait_replicas, REDIS_WAIT)
                .prefix(format!("{prefix}:ws"))
                .connect()
                .await
                .map_err(|err| err.to_string())?;
            socket_hub.store(store).build()
        }
    };
    let limits = stream::Limits {
        streams: config.max_streams,
        per_channel: config.max_streams_per_channel,
        buffer: config.stream_buffer,
    };
    let routes = match &config.routes_file {
        None => None,
        Some(path) => Some(Arc::new(routes::Routes::load(path)?)),
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
        routes: routes.clone(),
        channels: Channels::new(REMEMBERED_CHANNELS),
        metrics: Metrics::default(),
        config: config.clone(),
        streams: Streams::new(stream_hub, limits),
        sockets: ws::Sockets::new(socket_hub.clone()),
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
                    let mut response: Response<_> = match held.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    items::apply_reason(&mut response);
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
    match &routes {
        Some(table) => {
            tracing::info!(%client_addr, %publish_addr, routes_file = %table.path.display(), routes = table.table().all.len(), "longpoll-gateway started")
        }
        None => {
            tracing::info!(%client_addr, %publish_addr, upstream = ?config.upstream, "longpoll-gateway started")
        }
    }

    let stop = CancellationToken::new();
    if let Some(routes) = routes {
        routes::watch(routes, stop.clone());
    }
    let signals = {
        let stop = stop.clone();
        let hub = hub.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: answering held requests with 503, ending streams");
            hub.shutdown();
            state.streams.shutdown();
            state.sockets.shutdown.cancel();
            socket_hub.shutdown();
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
    // Upgraded connections are hyper's no longer: wait (within the grace)
    // for every WebSocket to have sent its 1001 before the runtime ends.
    let sockets_closed = async {
        while state
            .sockets
            .open
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(config.shutdown_grace, sockets_closed).await;
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
