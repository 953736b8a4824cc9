//! Long-polling added to a Rust gateway that already proxies an upstream
//! app: the long-poll layer holds the poll routes, and every other request
//! goes on to the upstream through `axum-reverse-proxy`, untouched.
//!
//! The layer wraps the proxy service itself, as it would wrap any tower
//! service: polls are answered here and never reach the upstream, which
//! publishes events by posting them to the gateway's publish address (by
//! default on loopback only, so that nobody outside can publish).
//!
//! ```text
//! python3 -m http.server 8000 --bind 127.0.0.1 &         # any upstream app
//! cargo run --example proxy -- --upstream http://127.0.0.1:8000
//! curl -i localhost:3005/                                # the upstream's answer
//! curl -i localhost:3005/poll/alice                      # held by the gateway...
//! curl -i -X POST -d hi localhost:3006/publish/alice     # ...until this
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_reverse_proxy::ReverseProxy;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_longpoll::{Event, Hub, LongPollLayer};

struct Args {
    listen: SocketAddr,
    publish_listen: SocketAddr,
    upstream: String,
}

fn args() -> Args {
    let usage = "usage: proxy --upstream URL [--listen ADDR] [--publish-listen ADDR]";
    let mut parsed = Args {
        listen: "127.0.0.1:3005".parse().expect("an address"),
        publish_listen: "127.0.0.1:3006".parse().expect("an address"),
        upstream: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{arg} needs a value; {usage}"));
        match arg.as_str() {
            "--listen" => parsed.listen = value.parse().expect("--listen ADDR"),
            "--publish-listen" => {
                parsed.publish_listen = value.parse().expect("--publish-listen ADDR");
            }
            "--upstream" => parsed.upstream = value,
            _ => panic!("unknown argument {arg}; {usage}"),
        }
    }
    assert!(!parsed.upstream.is_empty(), "{usage}");
    parsed
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = args();
    let hub = Hub::new();

    // The gateway as it was: everything to the upstream.
    let proxy = ReverseProxy::new("/", args.upstream.as_str());
    // The long-poll layer around it holds the polls.
    let gateway = ServiceBuilder::new()
        .layer(
            LongPollLayer::builder(hub.clone())
                .route("/poll/{client}")
                .timeout(Duration::from_secs(30))
                .build(),
        )
        .service(proxy);
    // axum::serve takes a Router; the gateway is all of it.
    let public = Router::new().fallback_service(gateway);
    let internal = Router::new()
        .route("/publish/{client}", post(publish))
        .with_state(hub.clone());

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let publish_listener = tokio::net::TcpListener::bind(args.publish_listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("publishing on http://{}", publish_listener.local_addr()?);
    println!("proxying to {}", args.upstream);

    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let publishing = tokio::spawn(
        axum::serve(publish_listener, internal)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .into_future(),
    );
    let serving = axum::serve(listener, public).with_graceful_shutdown({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            // Answer parked polls now, or the graceful shutdown waits for
            // their timeouts.
            hub.shutdown();
            stop.cancel();
        }
    });
    serving.await?;
    publishing.await.expect("the publish server does not panic")
}

/// `POST /publish/{client}` on the internal address: the body becomes an
/// event, with the request's content type.
async fn publish(
    State(hub): State<Hub>,
    Path(client): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut event = Event::new(body);
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        event = event.content_type(content_type.clone());
    }
    match hub.publish(&client, event).await {
        Ok(cursor) => {
            let etag = HeaderValue::try_from(format!("\"{cursor}\"")).expect("cursors are ASCII");
            (
                StatusCode::ACCEPTED,
                [(header::ETAG, etag)],
                format!("{cursor}\n"),
            )
                .into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
