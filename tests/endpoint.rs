//! `LongPollLayer::endpoint`: polls mounted on a route of axum's router, so
//! that route-level middleware and `MatchedPath` see them, over real sockets.

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use support::{Conn, TestServer, request};
use tower_longpoll::{Event, Hub, LongPollLayer};

/// The matched paths the route's middleware saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A router whose poll route is the layer's endpoint, behind a route layer
/// that records `MatchedPath` and wants a bearer token.
async fn server() -> (TestServer, Seen) {
    let hub = Hub::new();
    let polls = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .build();
    let seen = Seen::default();
    let record = Arc::clone(&seen);
    let router = Router::new()
        .route_service("/poll/{client}", polls.endpoint())
        .route_layer(middleware::from_fn(move |request: Request, next: Next| {
            let record = Arc::clone(&record);
            async move {
                let matched = request.extensions().get::<MatchedPath>().cloned();
                record
                    .lock()
                    .unwrap()
                    .push(matched.map_or_else(String::new, |m| m.as_str().to_owned()));
                let authorized = request
                    .headers()
                    .get("authorization")
                    .is_some_and(|value| value == "Bearer let-me-in");
                if authorized {
                    next.run(request).await
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }
        }))
        .route("/other", get(|| async { "other" }));
    (TestServer::serve(router, hub.clone()).await, seen)
}

const TOKEN: (&str, &str) = ("authorization", "Bearer let-me-in");

#[tokio::test]
async fn a_poll_through_the_router_gets_its_event_after_the_route_layer() {
    let (server, seen) = server().await;
    let mut poll = Conn::connect(server.addr).await;
    poll.send("GET", "/poll/alice", &[TOKEN]).await;
    server.parked(1).await;
    server
        .hub
        .publish("alice", Event::new("hello alice"))
        .await
        .unwrap();
    let reply = poll.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello alice");
    assert!(reply.header("etag").is_some(), "an ETag for the cursor");
    assert_eq!(*seen.lock().unwrap(), ["/poll/{client}"]);
    assert_eq!(server.hub.stats().parked, 0);
}

#[tokio::test]
async fn the_route_layer_refuses_before_the_poll_is_read() {
    let (server, seen) = server().await;
    server
        .hub
        .publish("bob", Event::new("for bob only"))
        .await
        .unwrap();
    let refused = request(server.addr, "GET", "/poll/bob?since=0", &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(!refused.text().contains("for bob only"));
    // Nothing was consumed: with the token, the event is still there.
    let served = request(server.addr, "GET", "/poll/bob", &[TOKEN]).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.text(), "for bob only");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_endpoint_keeps_the_layers_answers() {
    let (server, _seen) = server().await;
    let keepalive = request(server.addr, "GET", "/poll/carol?timeout=0", &[TOKEN]).await;
    assert_eq!(keepalive.status, StatusCode::NO_CONTENT);
    assert!(keepalive.header("etag").is_some());
    let post = request(server.addr, "POST", "/poll/carol", &[TOKEN]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        post.header("allow")
            .is_some_and(|allow| allow.contains("GET"))
    );
    let bad = request(
        server.addr,
        "GET",
        "/poll/carol?since=not-a-cursor",
        &[TOKEN],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Other routes are the router's.
    let other = request(server.addr, "GET", "/other", &[]).await;
    assert_eq!(other.text(), "other");
}
