//! A gRPC service and a long-poll route on one tonic server: the layer
//! answers `/poll/{client}` and passes every gRPC call through untouched.
//!
//! ```text
//! cargo run --example tonic                  # serves 127.0.0.1:3003
//! curl -i localhost:3003/poll/ticks          # a tick every second
//! grpcurl -plaintext localhost:3003 grpc.health.v1.Health/Check
//! ```

use std::time::Duration;

use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower_longpoll::{Event, Hub, LongPollLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3003".to_owned());

    let hub = Hub::new();
    let longpoll = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .build();

    // The standard gRPC health service: generated code ships with the crate.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("longpoll.demo", ServingStatus::Serving)
        .await;

    // Something to wait for: a tick published once a second.
    let ticker = hub.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        for n in 1u64.. {
            every.tick().await;
            if ticker
                .publish("ticks", Event::new(format!("tick {n}")))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let incoming = TcpIncoming::bind(listen.parse()?)?.with_nodelay(Some(true));
    println!("listening on http://{}", incoming.local_addr()?);
    Server::builder()
        // Browsers and curl long-poll over HTTP/1.1; gRPC uses HTTP/2.
        .accept_http1(true)
        .layer(longpoll)
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown_signal().await;
            hub.shutdown();
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
