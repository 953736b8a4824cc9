//! Shutdown: every parked poll is answered at once, and so is every new one.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::{Conn, TestServer, eventually, get, within};
use tokio_util::sync::CancellationToken;
use tower_longpoll::{Event, Hub, LongPollLayer};

fn layer(hub: &Hub) -> LongPollLayer {
    LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(60))
        .retry_after(Duration::from_secs(10))
        .build()
}

#[tokio::test]
async fn shutdown_answers_every_parked_poll_with_503_and_retry_after() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let mut conns = Vec::new();
    for n in 0..50 {
        let mut conn = Conn::connect(server.addr).await;
        conn.send("GET", &format!("/poll/id-{}", n % 10), &[]).await;
        conns.push(conn);
    }
    server.parked(50).await;

    hub.shutdown();
    let mut retry_afters = std::collections::BTreeSet::new();
    for conn in &mut conns {
        let reply = conn.response(false).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(reply.text().contains("shutting down"));
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "{retry}");
        retry_afters.insert(retry);
    }
    assert!(
        retry_afters.len() > 1,
        "Retry-After is spread: {retry_afters:?}"
    );
    assert_eq!(hub.stats().parked, 0);
    assert_eq!(hub.stats().shed, 50);

    // New polls too, even those with an event waiting; other routes still work.
    hub.publish("id-0", Event::new("late")).await.unwrap();
    assert_eq!(
        get(server.addr, "/poll/id-0").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(server.addr, "/").await.text(), "index");
}

#[tokio::test]
async fn a_graceful_server_shutdown_finishes_promptly_with_polls_parked() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub)).await;
    let mut conns = Vec::new();
    for n in 0..20 {
        let mut conn = Conn::connect(server.addr).await;
        conn.send("GET", &format!("/poll/g{n}"), &[]).await;
        conns.push(conn);
    }
    server.parked(20).await;

    let started = Instant::now();
    hub.shutdown();
    let serving = server.begin_stop();
    within("the graceful shutdown", serving).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "polls time out after 60 s, shutdown took {took:?}"
    );
    for conn in &mut conns {
        assert_eq!(
            conn.response(false).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

#[tokio::test]
async fn a_cancellation_token_shuts_the_hub_down() {
    let token = CancellationToken::new();
    let hub = Hub::builder().shutdown_on(token.clone()).build();
    let server = TestServer::start(layer(&hub)).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/t", &[]).await;
    server.parked(1).await;
    assert!(!hub.is_shut_down());
    token.cancel();
    assert!(hub.is_shut_down());
    assert_eq!(
        conn.response(false).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    eventually("nothing parked", || hub.stats().parked == 0).await;
}

/// The token given to `shutdown_on` is the application's (it may stop its
/// other tasks): the hub's own shutdown must not cancel it.
#[tokio::test]
async fn shutting_the_hub_down_leaves_the_callers_token_alone() {
    let token = CancellationToken::new();
    let hub = Hub::builder().shutdown_on(token.clone()).build();
    let server = TestServer::start(layer(&hub)).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/t", &[]).await;
    server.parked(1).await;
    hub.shutdown();
    assert_eq!(
        conn.response(false).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(hub.is_shut_down());
    assert!(
        !token.is_cancelled(),
        "the hub's shutdown cancelled the caller's token"
    );
    // The server, whose own shutdown may hang on that token, still serves.
    assert_eq!(get(server.addr, "/").await.text(), "index");
}
