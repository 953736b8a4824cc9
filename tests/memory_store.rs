//! The in-memory store behind a real server: its background sweep.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{TestServer, eventually, get};
use tower_longpoll::store::MemoryStore;
use tower_longpoll::{Event, Hub, LongPollLayer};

/// One server's life on a runtime of its own, with a publish and a poll.
fn serve_once(hub: &Hub, id: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let layer = LongPollLayer::builder(hub.clone())
            .route("/poll/{client}")
            .build();
        let server = TestServer::start(layer).await;
        hub.publish(id, Event::new("x")).await.unwrap();
        let reply = get(server.addr, &format!("/poll/{id}?since=0&timeout=0")).await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "x"));
        // The sweeper forgets the idle id on its own.
        eventually(format!("{id} forgotten by the sweeper"), || {
            hub.stats().ids == 0
        })
        .await;
        server.stop().await.unwrap();
    });
    // The runtime shuts down here, and its tasks (the sweeper's) with it.
}

/// A store used by a first runtime, then by a second one once the first has
/// shut down: the sweeper runs on the second as it did on the first.
#[test]
fn the_sweeper_starts_again_on_the_runtime_at_hand() {
    let store = MemoryStore::builder()
        .id_idle_ttl(Duration::from_millis(200))
        .build();
    let hub = Hub::builder().store(store).build();
    serve_once(&hub, "first");
    serve_once(&hub, "second");
}
