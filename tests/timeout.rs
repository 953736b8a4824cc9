//! Keepalives: when they come, what they carry, how clients resume from them.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::{Conn, TestServer, get, request};
use tower_longpoll::{Event, Hub, KeepAlive, LongPollLayer};

fn layer(hub: &Hub, timeout: Duration, jitter: f64) -> LongPollLayer {
    LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(timeout)
        .jitter(jitter)
        .build()
}

#[tokio::test]
async fn the_keepalive_comes_within_the_jitter_bounds() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub, Duration::from_millis(300), 0.2)).await;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let reply = get(server.addr, "/poll/ann").await;
        waits.push(started.elapsed());
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(reply.body.is_empty());
    }
    for wait in &waits {
        // Timers never fire early; the upper bound leaves room for a loaded machine.
        assert!(*wait >= Duration::from_millis(240), "{waits:?}");
        assert!(
            *wait <= Duration::from_millis(360) + Duration::from_secs(2),
            "{waits:?}"
        );
    }
    assert_eq!(hub.stats().timed_out, 5);
    assert_eq!(hub.stats().parked, 0);
}

#[tokio::test]
async fn the_keepalive_etag_is_the_clients_cursor() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub, Duration::from_millis(50), 0.0)).await;

    // An id that never had an event: its start.
    let fresh = get(server.addr, "/poll/bea").await;
    assert_eq!(fresh.status, StatusCode::NO_CONTENT);
    let start = fresh.cursor();
    assert!(start.ends_with("-0"), "{start}");

    // A client that sent a cursor gets it back.
    let c1 = hub.publish("bea", Event::new("one")).await.unwrap();
    let with_cursor = get(server.addr, &format!("/poll/bea?since={c1}")).await;
    assert_eq!(with_cursor.status, StatusCode::NO_CONTENT);
    assert_eq!(with_cursor.cursor(), c1.to_string());

    // A client without cursor: the last event delivered to it.
    assert_eq!(get(server.addr, "/poll/bea").await.text(), "one");
    let caught_up = get(server.addr, "/poll/bea").await;
    assert_eq!(caught_up.status, StatusCode::NO_CONTENT);
    assert_eq!(caught_up.cursor(), c1.to_string());

    // Resuming from the start cursor gets the first event, without a gap.
    let resumed = get(server.addr, &format!("/poll/bea?since={start}")).await;
    assert_eq!(resumed.text(), "one");
    assert_eq!(resumed.header("longpoll-gap"), None);
}

#[tokio::test]
async fn clients_may_ask_for_a_shorter_wait_but_not_a_longer_one() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(20))
        .max_timeout(Duration::from_millis(400))
        .jitter(0.1)
        .build();
    let server = TestServer::start(layer).await;

    let started = Instant::now();
    let short = get(server.addr, "/poll/cal?timeout=0.1").await;
    let waited = started.elapsed();
    assert_eq!(short.status, StatusCode::NO_CONTENT);
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    let started = Instant::now();
    let capped = get(server.addr, "/poll/cal?timeout=3600").await;
    let waited = started.elapsed();
    assert_eq!(capped.status, StatusCode::NO_CONTENT);
    assert!(waited >= Duration::from_millis(360), "{waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "capped at 0.4 s: {waited:?}"
    );

    let instant = get(server.addr, "/poll/cal?timeout=0").await;
    assert_eq!(instant.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn an_event_arriving_before_the_timeout_wins() {
    let hub = Hub::new();
    let server = TestServer::start(layer(&hub, Duration::from_millis(400), 0.0)).await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/dan", &[]).await;
    server.parked(1).await;
    hub.publish("dan", Event::new("in time")).await.unwrap();
    let reply = conn.response(false).await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "in time"));
    assert_eq!(hub.stats().timed_out, 0);
}

#[tokio::test]
async fn keepalives_can_be_text_or_any_response() {
    let hub = Hub::new();
    let text = LongPollLayer::builder(hub.clone())
        .route("/text/{client}")
        .timeout(Duration::from_millis(30))
        .keepalive(KeepAlive::text("no news\n"))
        .build();
    let nchan_like = LongPollLayer::builder(hub.clone())
        .route("/nchan/{client}")
        .timeout(Duration::from_millis(30))
        .keepalive(KeepAlive::response(
            http::Response::builder()
                .status(StatusCode::REQUEST_TIMEOUT)
                .header("x-keepalive", "1")
                .header("cache-control", "private, max-age=0")
                .body(Bytes::new())
                .unwrap(),
        ))
        .build();
    let router = support::app().layer(text).layer(nchan_like);
    let server = TestServer::serve(router, hub).await;

    let reply = get(server.addr, "/text/eve").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "no news\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(reply.header("etag").is_some());

    let reply = request(server.addr, "GET", "/nchan/eve", &[]).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.header("x-keepalive"), Some("1"));
    assert_eq!(
        reply.header("cache-control"),
        Some("private, max-age=0"),
        "the response's own header wins"
    );
    assert!(reply.header("etag").is_some());
}

#[tokio::test]
async fn a_store_that_never_answers_gets_a_503_past_the_deadline_and_a_grace() {
    let hub = Hub::builder()
        .store(DelayedReads(
            tower_longpoll::store::MemoryStore::new(),
            None,
        ))
        .build();
    let server = TestServer::start(layer(&hub, Duration::from_millis(200), 0.0)).await;
    for path in ["/poll/ann", "/poll/ann?timeout=0"] {
        let started = Instant::now();
        let reply = get(server.addr, path).await;
        let waited = started.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(reply.header("retry-after").is_some(), "{path}");
        assert!(reply.text().contains("unavailable"), "{path}");
        // The deadline (200 ms or none) plus the grace of 1 s, never less.
        assert!(waited >= Duration::from_secs(1), "{path}: {waited:?}");
    }
    assert_eq!(hub.stats().rejected, 2);
    assert_eq!(hub.stats().parked, 0);
}

/// A store whose reads answer late (`Some`) or never (`None`): the failure
/// being simulated, around the real in-memory store.
struct DelayedReads(tower_longpoll::store::MemoryStore, Option<Duration>);

impl tower_longpoll::store::Store for DelayedReads {
    fn append(
        &self,
        id: &str,
        event: Event,
    ) -> tower_longpoll::store::StoreFuture<
        Result<tower_longpoll::Cursor, tower_longpoll::store::StoreError>,
    > {
        self.0.append(id, event)
    }

    fn read(
        &self,
        id: &str,
        from: tower_longpoll::store::ReadFrom,
        max_events: usize,
    ) -> tower_longpoll::store::StoreFuture<
        Result<tower_longpoll::store::ReadResult, tower_longpoll::store::StoreError>,
    > {
        let Some(delay) = self.1 else {
            return tower_longpoll::store::StoreFuture::new(std::future::pending());
        };
        let (store, id) = (self.0.clone(), id.to_owned());
        tower_longpoll::store::StoreFuture::new(async move {
            tokio::time::sleep(delay).await;
            store.read(&id, from, max_events).await
        })
    }

    fn commit(
        &self,
        id: &str,
        cursor: tower_longpoll::Cursor,
    ) -> tower_longpoll::store::StoreFuture<Result<(), tower_longpoll::store::StoreError>> {
        self.0.commit(id, cursor)
    }

    fn stats(&self) -> tower_longpoll::store::StoreStats {
        self.0.stats()
    }
}

/// A first read that answers after the deadline, within the grace: the
/// keepalive, with the client's cursor, as soon as the read has answered.
#[tokio::test]
async fn a_first_read_answering_within_the_grace_gets_its_keepalive_at_once() {
    let hub = Hub::builder()
        .store(DelayedReads(
            tower_longpoll::store::MemoryStore::new(),
            Some(Duration::from_millis(300)),
        ))
        .build();
    let server = TestServer::start(layer(&hub, Duration::from_millis(100), 0.0)).await;
    let started = Instant::now();
    let reply = get(server.addr, "/poll/ann").await;
    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.cursor().ends_with("-0"), "{}", reply.cursor());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // Not held until the deadline plus the grace (1.1 s).
    assert!(waited < Duration::from_millis(900), "{waited:?}");
    assert_eq!(hub.stats().timed_out, 1);
}
