//! Long-polling on a plain hyper server, through hyper-util's
//! `TowerToHyperService`: the layer wraps a `service_fn`.
//!
//! ```text
//! cargo run --example hyper                          # serves 127.0.0.1:3002
//! curl -i localhost:3002/poll/alice                  # waits...
//! curl -i -X POST -d 'hi' localhost:3002/send/alice  # ...and this answers it
//! ```

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_longpoll::{Event, Hub, LongPollLayer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3002".to_owned());

    let hub = Hub::new();
    let longpoll = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .build();
    let publisher = hub.clone();
    let service = ServiceBuilder::new()
        .layer(longpoll)
        .service_fn(move |request| handle(publisher.clone(), request));

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let server = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let connection = server
                    .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        eprintln!("connection error: {err}");
                    }
                });
            }
            _ = &mut signal => break,
        }
    }
    // Parked polls are answered now, so the connections finish promptly.
    hub.shutdown();
    graceful.shutdown().await;
    Ok(())
}

async fn handle(hub: Hub, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let reply = |status, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        Ok(response)
    };
    match (request.method(), path.strip_prefix("/send/")) {
        (&Method::POST, Some(client)) => {
            let Ok(body) = Limited::new(request.into_body(), 1 << 20).collect().await else {
                return reply(StatusCode::PAYLOAD_TOO_LARGE, "at most 1 MiB\n".into());
            };
            match hub.publish(client, Event::new(body.to_bytes())).await {
                Ok(cursor) => reply(StatusCode::ACCEPTED, format!("{cursor}\n")),
                Err(err) => reply(StatusCode::BAD_REQUEST, format!("{err}\n")),
            }
        }
        _ => reply(
            StatusCode::OK,
            "poll /poll/{client}, publish with POST /send/{client}\n".into(),
        ),
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
