//! An event that carries its own status and headers: a poll answered with it
//! alone gets them, the layer keeping its own headers and the framing.

mod support;

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use support::{Conn, TestServer};
use tower_longpoll::{Event, Hub, LongPollLayer};

#[tokio::test]
async fn a_parked_poll_gets_the_events_status_and_headers() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(20))
        .build();
    let server = TestServer::start(layer).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/alice", &[]).await;
    server.parked(1).await;

    let mut headers = HeaderMap::new();
    headers.insert("x-order", HeaderValue::from_static("17"));
    headers.append("x-order", HeaderValue::from_static("18"));
    headers.insert("etag", HeaderValue::from_static("\"not-the-cursor\""));
    headers.insert("content-length", HeaderValue::from_static("999"));
    headers.insert("connection", HeaderValue::from_static("close"));
    headers.insert("content-type", HeaderValue::from_static("text/html"));
    let cursor = hub
        .publish(
            "alice",
            Event::new("gone")
                .content_type("text/plain")
                .status(StatusCode::GONE)
                .headers(headers),
        )
        .await
        .unwrap();

    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::GONE);
    assert_eq!(reply.text(), "gone");
    let orders: Vec<_> = reply.headers.get_all("x-order").iter().collect();
    assert_eq!(orders, ["17", "18"]);
    assert_eq!(reply.header("etag"), Some(format!("\"{cursor}\"").as_str()));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("content-length"), Some("4"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        reply.header("connection"),
        None,
        "the connection stays open"
    );

    // The connection is still usable: the event's `Connection: close` was not sent.
    conn.send("GET", &format!("/poll/alice?since={cursor}&timeout=0"), &[])
        .await;
    assert_eq!(conn.response(false).await.status, StatusCode::NO_CONTENT);
}

/// hyper never polls the body of a `204` or `304`: such an event is
/// committed as its response is handed over, so a client without a cursor
/// gets it once and then the events after it.
#[tokio::test]
async fn bodiless_events_are_delivered_once_and_the_next_ones_follow() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(20))
        .build();
    let server = TestServer::start(layer).await;
    let marked = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-event", HeaderValue::from_static(value));
        headers
    };
    let mut conn = Conn::connect(server.addr).await;

    // Answered at once from the log.
    let no_content = hub
        .publish(
            "alice",
            Event::new("")
                .status(StatusCode::NO_CONTENT)
                .headers(marked("no-content")),
        )
        .await
        .unwrap();
    conn.send("GET", "/poll/alice", &[]).await;
    let first = conn.response(false).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert_eq!(first.header("x-event"), Some("no-content"));
    assert_eq!(first.cursor(), no_content.to_string());
    conn.send("GET", "/poll/alice?timeout=0", &[]).await;
    let again = conn.response(false).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(again.header("x-event"), None, "the 204 event came once");
    assert_eq!(again.cursor(), no_content.to_string());

    // Answered while parked.
    conn.send("GET", "/poll/alice", &[]).await;
    server.parked(1).await;
    hub.publish(
        "alice",
        Event::new("")
            .status(StatusCode::NOT_MODIFIED)
            .headers(marked("not-modified")),
    )
    .await
    .unwrap();
    let parked = conn.response(false).await;
    assert_eq!(parked.status, StatusCode::NOT_MODIFIED);
    assert_eq!(parked.header("x-event"), Some("not-modified"));

    // An empty 200 goes out with `Content-Length: 0`, committed all the same.
    hub.publish("alice", Event::new("")).await.unwrap();
    conn.send("GET", "/poll/alice", &[]).await;
    let empty = conn.response(false).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.header("content-length"), Some("0"));

    let later = hub.publish("alice", Event::new("later")).await.unwrap();
    conn.send("GET", "/poll/alice", &[]).await;
    let next = conn.response(false).await;
    assert_eq!((next.status, next.text()), (StatusCode::OK, "later"));
    assert_eq!(next.cursor(), later.to_string());
    assert_eq!(server.hub.stats().delivered, 4);
}
