//! The Rust client against the demo's app (the same routes the demo binary
//! serves), in-process on 127.0.0.1, over real sockets.

#![cfg(feature = "client")]

mod support;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo_app;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode};
use support::{Conn, TestServer, eventually, listener_at, within};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_longpoll::client::{ErrorKind, LongPollClient, ReceivedEvent};
use tower_longpoll::store::{MemoryStore, Store};
use tower_longpoll::{ClientId, Event, Hub, LongPollLayer};

/// The demo's app on `listener`, on a new hub over `store`.
async fn demo_on(
    listener: TcpListener,
    store: &Arc<dyn Store>,
    options: &demo_app::Options,
) -> TestServer {
    let hub = Hub::builder().shared_store(Arc::clone(store)).build();
    TestServer::serve_on(listener, demo_app::router(hub.clone(), options), hub).await
}

async fn demo(options: demo_app::Options) -> TestServer {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    demo_on(support::listener(), &store, &options).await
}

fn text_event(text: &str) -> Event {
    Event::new(text.to_owned()).content_type("text/plain")
}

/// The next item, which must be an event.
async fn next_event(client: &mut LongPollClient) -> ReceivedEvent {
    within("the next event", client.next())
        .await
        .expect("the stream goes on")
        .expect("an event, not an error")
}

/// Drives a `next()` until the server has its poll parked, then drops that
/// `next()`.
async fn park_and_drop_next(client: &mut LongPollClient, server: &TestServer) {
    tokio::select! {
        item = client.next() => panic!("nothing was published, yet got {item:?}"),
        () = server.parked(1) => {}
    }
}

#[tokio::test]
async fn events_arrive_in_order_with_content_type_and_cursor() {
    let server = demo(demo_app::Options::default()).await;
    let mut cursors = Vec::new();
    for n in 1..=3 {
        let event = Event::new(format!(r#"{{"n":{n}}}"#)).content_type("application/json");
        cursors.push(server.hub.publish("alice", event).await.unwrap());
    }
    let mut client = LongPollClient::new(format!("http://{}/poll/alice", server.addr)).unwrap();
    assert_eq!(client.cursor(), None);
    for (n, cursor) in (1..=3).zip(&cursors) {
        let event = next_event(&mut client).await;
        assert_eq!(event.data(), format!(r#"{{"n":{n}}}"#).as_bytes());
        assert_eq!(event.content_type().unwrap(), "application/json");
        assert_eq!(event.cursor(), cursor.to_string());
        assert!(!event.gap());
        assert_eq!(client.cursor(), Some(event.cursor()));
    }

    // One published while the client is parked.
    let pending = tokio::spawn(async move {
        let event = next_event(&mut client).await;
        (client, event)
    });
    server.parked(1).await;
    let cursor = server
        .hub
        .publish("alice", text_event("four"))
        .await
        .unwrap();
    let (_client, event) = within("the parked poll", pending).await.unwrap();
    assert_eq!(event.data(), "four");
    assert_eq!(event.cursor(), cursor.to_string());
    assert_eq!(server.hub.stats().rejected, 0);
}

#[tokio::test]
async fn keepalives_are_polled_through() {
    let server = demo(demo_app::Options {
        timeout: Duration::from_millis(100),
        ..demo_app::Options::default()
    })
    .await;
    let mut client = LongPollClient::new(format!("http://{}/poll/bob", server.addr)).unwrap();
    let pending = tokio::spawn(async move { next_event(&mut client).await });
    let hub = server.hub.clone();
    eventually("three keepalives", || hub.stats().timed_out >= 3).await;
    assert!(!pending.is_finished(), "a keepalive is no event");
    server.parked(1).await;
    server
        .hub
        .publish("bob", text_event("at last"))
        .await
        .unwrap();
    let event = within("the event after keepalives", pending).await.unwrap();
    assert_eq!(event.data(), "at last");
    let stats = server.hub.stats();
    assert_eq!((stats.rejected, stats.delivered), (0, 1));
}

#[tokio::test]
async fn gaps_are_surfaced() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::builder().capacity(2).build());
    let server = demo_on(support::listener(), &store, &demo_app::Options::default()).await;
    let first = server.hub.publish("carol", text_event("1")).await.unwrap();
    for n in 2..=5 {
        server
            .hub
            .publish("carol", text_event(&n.to_string()))
            .await
            .unwrap();
    }
    let mut client = LongPollClient::builder(format!("http://{}/poll/carol", server.addr))
        .since(first.to_string())
        .build()
        .unwrap();
    let event = next_event(&mut client).await;
    assert_eq!(event.data(), "4", "2 and 3 are no longer kept");
    assert!(event.gap(), "the client is told it missed some");
    let event = next_event(&mut client).await;
    assert_eq!(event.data(), "5");
    assert!(!event.gap());
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let server = demo(demo_app::Options {
        max_per_id: 1,
        retry_after: Duration::from_secs(1),
        ..demo_app::Options::default()
    })
    .await;
    let start = server.hub.publish("dave", text_event("0")).await.unwrap();
    // Another poll holds dave's only slot: the client's poll gets 429.
    let mut other = Conn::connect(server.addr).await;
    other
        .send("GET", &format!("/poll/dave?since={start}"), &[])
        .await;
    server.parked(1).await;

    let mut client = LongPollClient::builder(format!("http://{}/poll/dave", server.addr))
        .since(start.to_string())
        // Far shorter than the Retry-After: only the header can explain a
        // wait of a second.
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .unwrap();
    let started = Instant::now();
    let pending = tokio::spawn(async move { next_event(&mut client).await });
    let hub = server.hub.clone();
    eventually("the 429", || hub.stats().rejected == 1).await;
    other.reset();
    server.parked(0).await;
    server.hub.publish("dave", text_event("1")).await.unwrap();

    let event = within("the retried poll", pending).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(event.data(), "1");
    assert!(
        elapsed >= Duration::from_secs(1),
        "retried after {elapsed:?}, before Retry-After: 1"
    );
    assert_eq!(server.hub.stats().rejected, 1, "one 429, then one wait");
}

#[tokio::test]
async fn a_server_restart_loses_nothing() {
    // The store outlives the server, as a shared store would; each server
    // gets a new hub, since a hub that has shut down stays down.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = demo_app::Options {
        retry_after: Duration::from_secs(1),
        ..demo_app::Options::default()
    };
    let server = demo_on(support::listener(), &store, &options).await;
    let addr = server.addr;
    server.hub.publish("erin", text_event("1")).await.unwrap();
    let mut client = LongPollClient::builder(format!("http://{addr}/poll/erin"))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(next_event(&mut client).await.data(), "1");

    let pending = tokio::spawn(async move {
        let mut events = Vec::new();
        for _ in 0..3 {
            events.push(next_event(&mut client).await);
        }
        events
    });
    server.parked(1).await;
    // Shutdown answers the parked poll 503 + Retry-After; then the port is
    // closed and the client's connects are refused until the restart.
    let old_hub = server.hub.clone();
    old_hub.shutdown();
    server.stop().await.expect("the server stops");
    assert_eq!(old_hub.stats().shed, 1, "the parked poll got a 503");
    let offline = Hub::builder().shared_store(Arc::clone(&store)).build();
    offline.publish("erin", text_event("2")).await.unwrap();
    offline.publish("erin", text_event("3")).await.unwrap();

    let server = demo_on(listener_at(addr), &store, &options).await;
    server.hub.publish("erin", text_event("4")).await.unwrap();
    let events = within("the events across the restart", pending)
        .await
        .unwrap();
    let texts: Vec<&[u8]> = events.iter().map(|e| &e.data()[..]).collect();
    assert_eq!(texts, [&b"2"[..], b"3", b"4"]);
    assert!(events.iter().all(|e| !e.gap()));
}

#[tokio::test]
async fn dropping_a_pending_next_or_the_stream_loses_nothing() {
    let server = demo(demo_app::Options::default()).await;
    let url = format!("http://{}/poll/frank", server.addr);
    let mut client = LongPollClient::new(url.as_str()).unwrap();

    // A next() dropped while its poll is parked: the poll stays in the stream.
    park_and_drop_next(&mut client, &server).await;
    let first = server.hub.publish("frank", text_event("1")).await.unwrap();
    let hub = server.hub.clone();
    eventually("the event handed to the connection", || {
        hub.stats().delivered == 1
    })
    .await;
    let event = next_event(&mut client).await;
    assert_eq!(event.data(), "1");
    assert_eq!(client.cursor(), Some(first.to_string().as_str()));

    // The stream dropped while the server has sent it an event it never
    // yielded: a client resuming from its cursor gets that event.
    park_and_drop_next(&mut client, &server).await;
    server.hub.publish("frank", text_event("2")).await.unwrap();
    eventually("the second event handed to the connection", || {
        hub.stats().delivered == 2
    })
    .await;
    let saved = client.cursor().unwrap().to_owned();
    drop(client);
    let mut resumed = LongPollClient::builder(url.as_str())
        .since(saved)
        .build()
        .unwrap();
    let event = next_event(&mut resumed).await;
    assert_eq!(event.data(), "2");
    assert!(!event.gap());
}

#[tokio::test]
async fn refusals_that_retrying_cannot_cure_end_the_stream() {
    let server = demo(demo_app::Options::default()).await;
    let addr = server.addr;
    for (path, status, says) in [
        (
            "/poll/grace?since=not-a-cursor",
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        ("/nothing-here", StatusCode::NOT_FOUND, ""),
        ("/publish/grace", StatusCode::METHOD_NOT_ALLOWED, ""),
    ] {
        let mut client = LongPollClient::new(format!("http://{addr}{path}")).unwrap();
        let err = within("the refusal", client.next())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status(status), "{path}: {err}");
        assert_eq!(err.status(), Some(status));
        assert!(err.detail().contains(says), "{path}: {err}");
        assert!(client.next().await.is_none(), "{path}: the stream ends");
    }
}

#[tokio::test]
async fn the_urls_query_and_the_clients_headers_go_with_every_poll() {
    let hub = Hub::new();
    let by_query = LongPollLayer::builder(hub.clone())
        .route("/by-query")
        .client_id(ClientId::query("user"))
        .build();
    let by_header = LongPollLayer::builder(hub.clone())
        .route("/by-header")
        .client_id(ClientId::header("x-user"))
        .build();
    let router = Router::new().layer(by_query).layer(by_header);
    let server = TestServer::serve(router, hub).await;
    for id in ["heidi", "ivan"] {
        for n in 1..=2 {
            server
                .hub
                .publish(id, text_event(&format!("{id} {n}")))
                .await
                .unwrap();
        }
    }
    let mut by_query =
        LongPollClient::new(format!("http://{}/by-query?user=heidi", server.addr)).unwrap();
    let mut by_header = LongPollClient::builder(format!("http://{}/by-header", server.addr))
        .header(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("ivan"),
        )
        .build()
        .unwrap();
    for n in 1..=2 {
        assert_eq!(
            next_event(&mut by_query).await.data(),
            format!("heidi {n}").as_bytes()
        );
        assert_eq!(
            next_event(&mut by_header).await.data(),
            format!("ivan {n}").as_bytes()
        );
    }
}

#[cfg(feature = "client-http2")]
#[tokio::test]
async fn http2_only_polls_over_http2() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static HTTP2_POLLS: AtomicUsize = AtomicUsize::new(0);
    let hub = Hub::new();
    let router = demo_app::router(hub.clone(), &demo_app::Options::default()).layer(
        axum::middleware::map_request(|request: axum::extract::Request| async move {
            if request.version() == http::Version::HTTP_2 {
                HTTP2_POLLS.fetch_add(1, Ordering::Relaxed);
            }
            request
        }),
    );
    let server = TestServer::serve(router, hub).await;
    server
        .hub
        .publish("judy", text_event("over h2"))
        .await
        .unwrap();
    let mut client = LongPollClient::builder(format!("http://{}/poll/judy", server.addr))
        .http2_only(true)
        .build()
        .unwrap();
    assert_eq!(next_event(&mut client).await.data(), "over h2");
    assert_eq!(HTTP2_POLLS.load(Ordering::Relaxed), 1);
}

/// The demo's app behind tower-http's `TimeoutLayer`, put (wrongly) outside
/// the long-poll layer: every poll that waits longer than `cut_after` is
/// answered `408` by the timeout layer; the server's own wait is 30 s.
/// Each poll's arrival is noted.
async fn demo_behind_a_timeout(cut_after: Duration) -> (TestServer, Arc<Mutex<Vec<Instant>>>) {
    let hub = Hub::new();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&arrivals);
    let router = demo_app::router(hub.clone(), &demo_app::Options::default())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            cut_after,
        ))
        .layer(axum::middleware::map_request(
            move |request: axum::extract::Request| {
                let noted = Arc::clone(&noted);
                async move {
                    if request.uri().path().starts_with("/poll/") {
                        noted.lock().unwrap().push(Instant::now());
                    }
                    request
                }
            },
        ));
    (TestServer::serve(router, hub).await, arrivals)
}

#[tokio::test]
async fn a_408_from_a_timeout_layer_is_polled_again_at_once() {
    let (server, _) = demo_behind_a_timeout(Duration::from_millis(300)).await;
    let mut client = LongPollClient::builder(format!("http://{}/poll/kim", server.addr))
        // A backoff this long would show: a 408 is no failure to back off from.
        .backoff(Duration::from_secs(20), Duration::from_secs(40))
        .build()
        .unwrap();
    let pending = tokio::spawn(async move { next_event(&mut client).await });
    let hub = server.hub.clone();
    eventually("three polls cut short by the timeout layer", || {
        hub.stats().cancelled >= 3
    })
    .await;
    server.parked(1).await;
    let published = Instant::now();
    let cursor = server
        .hub
        .publish("kim", text_event("through the 408s"))
        .await
        .unwrap();
    let event = within("the event after the 408s", pending).await.unwrap();
    assert_eq!(event.data(), "through the 408s");
    assert_eq!(event.cursor(), cursor.to_string());
    assert!(
        published.elapsed() < Duration::from_secs(10),
        "the event took {:?}: the client backed off",
        published.elapsed()
    );
    assert_eq!(server.hub.stats().rejected, 0);
}

#[tokio::test]
async fn instant_408s_are_polled_again_no_more_than_once_a_second() {
    // Every poll is answered 408 at once: without a floor, the client would
    // poll in a hot loop (with this backoff, every 10 to 20 ms).
    let (server, arrivals) = demo_behind_a_timeout(Duration::ZERO).await;
    let mut client = LongPollClient::builder(format!("http://{}/poll/lee", server.addr))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();
    let pending = tokio::spawn(async move { next_event(&mut client).await });
    eventually("four polls", || arrivals.lock().unwrap().len() >= 4).await;
    pending.abort();
    let arrivals = arrivals.lock().unwrap().clone();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    // The first 408 is polled again at once; from the second one in a row
    // on, polls start a second apart (less what the client's clock and the
    // server's see differently).
    for gap in &gaps[1..3] {
        assert!(
            *gap >= Duration::from_millis(900),
            "polls {gaps:?} apart after instant 408s"
        );
    }
}
