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

/// A store whose commits wait for `release` (as a commit to Redis waits for
/// its round trip), around the real in-memory store.
struct HeldCommits {
    store: tower_longpoll::store::MemoryStore,
    release: std::sync::Arc<tokio::sync::Notify>,
    committed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tower_longpoll::store::Store for HeldCommits {
    fn append(
        &self,
        id: &str,
        event: Event,
    ) -> tower_longpoll::store::StoreFuture<
        Result<tower_longpoll::Cursor, tower_longpoll::store::StoreError>,
    > {
        self.store.append(id, event)
    }

    fn read(
        &self,
        id: &str,
        from: tower_longpoll::store::ReadFrom,
        max_events: usize,
    ) -> tower_longpoll::store::StoreFuture<
        Result<tower_longpoll::store::ReadResult, tower_longpoll::store::StoreError>,
    > {
        self.store.read(id, from, max_events)
    }

    fn commit(
        &self,
        id: &str,
        cursor: tower_longpoll::Cursor,
    ) -> tower_longpoll::store::StoreFuture<Result<(), tower_longpoll::store::StoreError>> {
        let (store, id) = (self.store.clone(), id.to_owned());
        let (release, committed) = (self.release.clone(), self.committed.clone());
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tower_longpoll::store::StoreFuture::new(async move {
            release.notified().await;
            let result = store.commit(&id, cursor).await;
            committed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            result
        })
    }

    fn stats(&self) -> tower_longpoll::store::StoreStats {
        self.store.stats()
    }
}

/// An event is committed as its response is handed over, so the head
/// waits for the commit and goes out with the bytes: a body that waited for
/// a commit's round trip (Redis) made hyper send the head and the bytes in
/// two segments, and Nagle's algorithm held the second until the client
/// acknowledged the first (40 ms an event where the server's sockets lack
/// TCP_NODELAY, as `axum::serve` leaves them). With the commit held, not
/// even the head is sent; released, the whole response comes, and the
/// delivery position is past the event.
#[tokio::test]
async fn an_events_head_waits_for_its_commit_and_goes_out_with_its_bytes() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = HeldCommits {
        store: tower_longpoll::store::MemoryStore::new(),
        release: release.clone(),
        committed: committed.clone(),
        calls: calls.clone(),
    };
    let hub = Hub::builder().store(store).build();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(20))
        .build();
    let server = TestServer::start(layer).await;
    hub.publish("held", Event::new("first")).await.unwrap();
    hub.publish("held", Event::new("second")).await.unwrap();

    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/held", &[]).await;
    support::eventually("the commit started", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    // The old body committed at its first poll, after hyper had queued the
    // head, which then arrived at once.
    let early = tokio::time::timeout(Duration::from_millis(300), conn.read_some()).await;
    assert!(early.is_err(), "the head went out before the commit");
    assert_eq!(committed.load(std::sync::atomic::Ordering::SeqCst), 0);

    release.notify_one();
    let reply = support::within("the event", conn.response(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "first");
    assert_eq!(committed.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The next poll, without a cursor, starts past it.
    conn.send("GET", "/poll/held?timeout=0", &[]).await;
    support::eventually("the second commit started", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) == 2
    })
    .await;
    release.notify_one();
    let next = support::within("the next event", conn.response(false)).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.text(), "second");
}
