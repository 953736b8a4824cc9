//! Long-polling on an axum app: `/poll/{client}` waits for events that any
//! handler publishes through the hub; every other route is the app's own.
//!
//! ```text
//! cargo run --example axum                         # serves 127.0.0.1:3001
//! curl -i localhost:3001/poll/alice                # waits...
//! curl -i -X POST -d 'hi' localhost:3001/send/alice  # ...and this answers it
//! ```

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_longpoll::{Event, Hub, LongPollLayer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".to_owned());

    let hub = Hub::new();
    let longpoll = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .build();

    let app = Router::new()
        .route(
            "/",
            get(|| async { "poll /poll/{client}, publish with POST /send/{client}\n" }),
        )
        .route("/send/{client}", post(send))
        .with_state(hub.clone())
        .layer(longpoll);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Answer parked polls now, or the graceful shutdown waits for
            // their timeouts.
            hub.shutdown();
        })
        .await
}

async fn send(
    State(hub): State<Hub>,
    Path(client): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    match hub
        .publish(&client, Event::new(body).content_type("text/plain"))
        .await
    {
        Ok(cursor) => (StatusCode::ACCEPTED, format!("{cursor}\n")),
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")),
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
