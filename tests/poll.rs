//! Park, event, log and cursor, delivery position, pass-through: over real
//! sockets to a real axum server.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::{Conn, TestServer, eventually, get, request, within};
use tower_longpoll::{Cursor, Event, Hub, LongPollLayer, store::MemoryStore};

fn layer(hub: &Hub) -> LongPollLayer {
    LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(20))
        .batching(16)
        .build()
}

async fn server() -> TestServer {
    TestServer::start(layer(&Hub::new())).await
}

#[tokio::test]
async fn a_parked_poll_gets_the_event_exactly_as_published() {
    let server = server().await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/alice", &[]).await;
    server.parked(1).await;

    let body = Bytes::from_static(b"{\"n\":1}\x00\xff");
    let cursor = server
        .hub
        .publish(
            "alice",
            Event::new(body.clone()).content_type("application/json"),
        )
        .await
        .unwrap();

    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("etag"), Some(format!("\"{cursor}\"").as_str()));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-length"), Some("9"));
    assert_eq!(reply.header("longpoll-gap"), None);
    assert_eq!(server.hub.stats().parked, 0);
    eventually("the delivery is counted", || {
        server.hub.stats().delivered == 1
    })
    .await;
}

#[tokio::test]
async fn an_event_without_content_type_is_octet_stream_and_other_ids_stay_parked() {
    let server = server().await;
    let mut alice = Conn::connect(server.addr).await;
    let mut bob = Conn::connect(server.addr).await;
    alice.send("GET", "/poll/alice", &[]).await;
    bob.send("GET", "/poll/bob", &[]).await;
    server.parked(2).await;
    server
        .hub
        .publish("alice", Event::new("for alice"))
        .await
        .unwrap();
    let reply = alice.response(false).await;
    assert_eq!(reply.text(), "for alice");
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    server.parked(1).await;
    server
        .hub
        .publish("bob", Event::new("for bob"))
        .await
        .unwrap();
    assert_eq!(bob.response(false).await.text(), "for bob");
}

#[tokio::test]
async fn a_publish_with_nobody_parked_is_kept_for_the_next_poll() {
    let server = server().await;
    let cursor = server
        .hub
        .publish("carol", Event::new("kept"))
        .await
        .unwrap();
    assert_eq!(server.hub.stats().kept_events, 1);
    let reply = get(server.addr, "/poll/carol").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "kept");
    assert_eq!(reply.cursor(), cursor.to_string());
    assert_eq!(server.hub.stats().parked, 0, "answered without parking");
}

#[tokio::test]
async fn every_tab_of_an_id_gets_the_event_up_to_the_per_id_limit() {
    let server = server().await;
    let mut tabs = Vec::new();
    for _ in 0..8 {
        let mut conn = Conn::connect(server.addr).await;
        conn.send("GET", "/poll/dave", &[]).await;
        tabs.push(conn);
    }
    server.parked(8).await;

    let ninth = get(server.addr, "/poll/dave").await;
    assert_eq!(ninth.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = ninth.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry));
    assert!(ninth.text().contains("8 polls waiting"), "{}", ninth.text());
    assert_eq!(server.hub.stats().parked, 8);
    assert_eq!(server.hub.stats().rejected, 1);

    server
        .hub
        .publish("dave", Event::new("to all tabs"))
        .await
        .unwrap();
    for tab in &mut tabs {
        assert_eq!(tab.response(false).await.text(), "to all tabs");
    }
    assert_eq!(server.hub.stats().parked, 0);
}

#[tokio::test]
async fn the_global_limit_answers_503_with_retry_after() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .max_parked(3)
        .build();
    let server = TestServer::start(layer).await;
    let mut held = Vec::new();
    for n in 0..3 {
        let mut conn = Conn::connect(server.addr).await;
        conn.send("GET", &format!("/poll/c{n}"), &[]).await;
        held.push(conn);
    }
    server.parked(3).await;
    let refused = get(server.addr, "/poll/c9").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        refused.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(refused.text().contains("as many polls as it may"));
    // A poll that can be answered from the log is not refused by parking limits.
    hub.publish("c9", Event::new("ready")).await.unwrap();
    assert_eq!(get(server.addr, "/poll/c9").await.text(), "ready");
}

#[tokio::test]
async fn each_cursor_form_replays_the_next_event() {
    let server = server().await;
    let hub = &server.hub;
    let c1 = hub.publish("erin", Event::new("one")).await.unwrap();
    let c2 = hub.publish("erin", Event::new("two")).await.unwrap();
    let c3 = hub.publish("erin", Event::new("three")).await.unwrap();

    let since = get(server.addr, &format!("/poll/erin?since={c1}")).await;
    assert_eq!((since.text(), since.cursor()), ("two", c2.to_string()));

    let last_event_id = request(
        server.addr,
        "GET",
        "/poll/erin",
        &[("last-event-id", &c2.to_string())],
    )
    .await;
    assert_eq!(
        (last_event_id.text(), last_event_id.cursor()),
        ("three", c3.to_string())
    );

    let etag = format!("\"{c1}\"");
    let if_none_match = request(
        server.addr,
        "GET",
        "/poll/erin",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(if_none_match.text(), "two");
    assert_eq!(if_none_match.header("longpoll-gap"), None);
}

#[tokio::test]
async fn a_poll_at_the_newest_cursor_parks_until_the_next_event() {
    let server = server().await;
    let c1 = server.hub.publish("fay", Event::new("one")).await.unwrap();
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", &format!("/poll/fay?since={c1}"), &[])
        .await;
    server.parked(1).await;
    let c2 = server.hub.publish("fay", Event::new("two")).await.unwrap();
    let reply = conn.response(false).await;
    assert_eq!((reply.text(), reply.cursor()), ("two", c2.to_string()));
}

#[tokio::test]
async fn a_cursor_older_than_the_log_gets_the_oldest_event_flagged_as_a_gap() {
    let hub = Hub::builder()
        .store(MemoryStore::builder().capacity(2).build())
        .build();
    let server = TestServer::start(layer(&hub)).await;
    let c1 = hub.publish("gus", Event::new("1")).await.unwrap();
    for n in 2..=4 {
        hub.publish("gus", Event::new(n.to_string())).await.unwrap();
    }
    let reply = get(server.addr, &format!("/poll/gus?since={c1}")).await;
    assert_eq!(reply.text(), "3", "events 2 is gone; 3 is the oldest kept");
    assert_eq!(reply.header("longpoll-gap"), Some("true"));

    // Resuming from there is gap-free.
    let next = get(server.addr, &format!("/poll/gus?since={}", reply.cursor())).await;
    assert_eq!(next.text(), "4");
    assert_eq!(next.header("longpoll-gap"), None);
}

#[tokio::test]
async fn a_cursor_from_another_epoch_is_a_gap_even_when_it_must_park() {
    let server = server().await;
    // A cursor from before a restart: a well-formed cursor of another epoch.
    let stale = Cursor::new(0x0123_4567_89ab_cdef, 41);
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", &format!("/poll/hal?since={stale}"), &[])
        .await;
    server.parked(1).await;
    server
        .hub
        .publish("hal", Event::new("after restart"))
        .await
        .unwrap();
    let reply = conn.response(false).await;
    assert_eq!(reply.text(), "after restart");
    assert_eq!(reply.header("longpoll-gap"), Some("true"));
}

#[tokio::test]
async fn clients_without_cursor_get_every_event_in_order_from_the_oldest() {
    let server = server().await;
    for n in 1..=3 {
        server
            .hub
            .publish("ivy", Event::new(format!("e{n}")))
            .await
            .unwrap();
    }
    let mut conn = Conn::connect(server.addr).await;
    for n in 1..=3 {
        conn.send("GET", "/poll/ivy", &[]).await;
        let reply = conn.response(false).await;
        assert_eq!(reply.text(), format!("e{n}"));
    }
    // Caught up: the next poll parks and gets the next event.
    conn.send("GET", "/poll/ivy", &[]).await;
    server.parked(1).await;
    server.hub.publish("ivy", Event::new("e4")).await.unwrap();
    assert_eq!(conn.response(false).await.text(), "e4");
}

#[tokio::test]
async fn head_polls_answer_the_headers_without_consuming_the_event() {
    let server = server().await;
    let cursor = server
        .hub
        .publish("jo", Event::new("12345").content_type("text/plain"))
        .await
        .unwrap();
    let head = request(server.addr, "HEAD", "/poll/jo", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(head.header("content-type"), Some("text/plain"));
    assert_eq!(head.cursor(), cursor.to_string());
    assert!(head.body.is_empty());
    // The event is still there for a GET without a cursor.
    assert_eq!(get(server.addr, "/poll/jo").await.text(), "12345");
}

#[tokio::test]
async fn batches_come_as_multipart_when_asked_for() {
    let server = server().await;
    let mut cursors = Vec::new();
    for n in 1..=3 {
        cursors.push(
            server
                .hub
                .publish(
                    "kim",
                    Event::new(format!("e{n}")).content_type("text/plain"),
                )
                .await
                .unwrap(),
        );
    }
    let reply = get(server.addr, "/poll/kim?batch=10").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .expect("multipart");
    assert_eq!(reply.cursor(), cursors[2].to_string());
    let expected: String = cursors
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "--{boundary}\r\nContent-Type: text/plain\r\nETag: \"{c}\"\r\n\r\ne{}\r\n",
                i + 1
            )
        })
        .chain(std::iter::once(format!("--{boundary}--\r\n")))
        .collect();
    assert_eq!(reply.text(), expected);

    // The batch moved the delivery position past all three.
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/kim", &[]).await;
    server.parked(1).await;
    server.hub.publish("kim", Event::new("e4")).await.unwrap();
    assert_eq!(conn.response(false).await.text(), "e4");

    // Without ?batch, one event per response, as published.
    server.hub.publish("kim", Event::new("e5")).await.unwrap();
    let single = get(server.addr, &format!("/poll/kim?since={}", cursors[2])).await;
    assert_eq!(single.text(), "e4");
    assert_eq!(
        single.header("content-type"),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn batches_are_capped_by_the_layer() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .batching(2)
        .build();
    let server = TestServer::start(layer).await;
    for n in 1..=5 {
        hub.publish("lee", Event::new(format!("e{n}")))
            .await
            .unwrap();
    }
    let reply = get(server.addr, "/poll/lee?batch=100").await;
    assert_eq!(reply.text().matches("ETag:").count(), 2);
}

#[tokio::test]
async fn other_routes_pass_through_untouched() {
    let server = server().await;
    let index = get(server.addr, "/").await;
    assert_eq!((index.status, index.text()), (StatusCode::OK, "index"));

    let streamed = get(server.addr, "/stream").await;
    assert_eq!(streamed.text(), "chunk0;chunk1;chunk2;");
    assert_eq!(streamed.header("x-inner"), Some("yes"));
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(streamed.header("etag"), None);

    let mut conn = Conn::connect(server.addr).await;
    conn.send_with_body("POST", "/echo", &[], b"posted body")
        .await;
    assert_eq!(conn.response(false).await.text(), "posted body");

    assert_eq!(
        get(server.addr, "/nope").await.status,
        StatusCode::NOT_FOUND
    );
    // Paths that only look like the poll route are not polls.
    assert_eq!(
        get(server.addr, "/poll").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(server.addr, "/poll/a/b").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.hub.stats(), Default::default());
}

#[tokio::test]
async fn polls_and_other_requests_share_a_keep_alive_connection() {
    let server = server().await;
    server
        .hub
        .publish("max", Event::new("first"))
        .await
        .unwrap();
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/max", &[]).await;
    assert_eq!(conn.response(false).await.text(), "first");
    conn.send("GET", "/", &[]).await;
    assert_eq!(conn.response(false).await.text(), "index");
    conn.send("GET", "/poll/max", &[]).await;
    server.parked(1).await;
    server
        .hub
        .publish("max", Event::new("second"))
        .await
        .unwrap();
    assert_eq!(conn.response(false).await.text(), "second");
}

#[tokio::test]
async fn stats_count_what_happened() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_millis(50))
        .jitter(0.0)
        .build();
    let server = TestServer::start(layer).await;
    hub.publish("ned", Event::new("x")).await.unwrap();
    get(server.addr, "/poll/ned").await; // delivered
    get(server.addr, "/poll/ned").await; // timed out
    get(server.addr, "/poll/%00").await; // rejected
    let mut gone = Conn::connect(server.addr).await;
    gone.send("GET", "/poll/ned", &[]).await;
    server.parked(1).await;
    gone.reset(); // cancelled
    server.parked(0).await;
    let stats = hub.stats();
    assert_eq!(stats.published, 1);
    assert_eq!(stats.delivered, 1);
    assert_eq!(stats.timed_out, 1);
    assert_eq!(stats.rejected, 1);
    eventually("the cancellation is counted", || hub.stats().cancelled == 1).await;
    assert_eq!(stats.ids, 1);
    assert_eq!(stats.kept_events, 1);
}

#[tokio::test]
async fn a_thousand_events_reach_a_client_in_order_through_a_poll_loop() {
    let hub = Hub::builder()
        .store(MemoryStore::builder().capacity(1000).build())
        .build();
    let server = TestServer::start(layer(&hub)).await;
    let hub = server.hub.clone();
    let publisher = tokio::spawn(async move {
        for n in 0..1000u32 {
            hub.publish("olga", Event::new(n.to_string()))
                .await
                .unwrap();
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut conn = Conn::connect(server.addr).await;
    let mut cursor = String::new();
    let mut seen = 0u32;
    within("all events", async {
        while seen < 1000 {
            conn.send("GET", &format!("/poll/olga?since={cursor}&batch=64"), &[])
                .await;
            let reply = conn.response(false).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.header("longpoll-gap"),
                None,
                "the log is large enough here"
            );
            cursor = reply.cursor();
            for part in reply.text().split("\r\n\r\n").skip(1) {
                let value: u32 = part.split("\r\n").next().unwrap().parse().unwrap();
                assert_eq!(value, seen, "events arrive in order, none missing");
                seen += 1;
            }
        }
    })
    .await;
    publisher.await.unwrap();
}

#[tokio::test]
async fn an_empty_event_is_delivered_once_to_a_client_without_cursor() {
    let server = server().await;
    let cursor = server.hub.publish("pam", Event::new("")).await.unwrap();
    let mut conn = Conn::connect(server.addr).await;
    conn.send("GET", "/poll/pam", &[]).await;
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());
    assert_eq!(reply.cursor(), cursor.to_string());
    eventually("the delivery is committed", || {
        server.hub.stats().delivered == 1
    })
    .await;
    conn.send("GET", "/poll/pam?timeout=0", &[]).await;
    let next = conn.response(false).await;
    assert_eq!(next.status, StatusCode::NO_CONTENT, "not delivered again");
    assert_eq!(next.cursor(), cursor.to_string());
}

#[tokio::test]
async fn a_zero_timeout_only_reads_and_never_takes_a_parking_slot() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .max_per_id(1)
        .build();
    let server = TestServer::start(layer).await;
    let mut held = Conn::connect(server.addr).await;
    held.send("GET", "/poll/quinn", &[]).await;
    server.parked(1).await;
    assert_eq!(
        get(server.addr, "/poll/quinn").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let check = get(server.addr, "/poll/quinn?timeout=0").await;
    assert_eq!(
        check.status,
        StatusCode::NO_CONTENT,
        "a check is not refused by the per-id limit"
    );
    assert!(check.header("etag").is_some());
    hub.publish("quinn", Event::new("x")).await.unwrap();
    assert_eq!(held.response(false).await.text(), "x");
}

#[tokio::test]
async fn since_zero_starts_at_the_oldest_event_whatever_was_delivered() {
    let server = server().await;
    let c1 = server.hub.publish("rae", Event::new("one")).await.unwrap();
    server.hub.publish("rae", Event::new("two")).await.unwrap();
    // Another client without a cursor takes both.
    assert_eq!(get(server.addr, "/poll/rae").await.text(), "one");
    assert_eq!(get(server.addr, "/poll/rae").await.text(), "two");
    // A client starting out with `since=0` still gets them, from the first.
    let first = get(server.addr, "/poll/rae?since=0").await;
    assert_eq!(first.text(), "one");
    assert_eq!(first.cursor(), c1.to_string());
    assert_eq!(first.header("longpoll-gap"), None);
    let zero = request(server.addr, "GET", "/poll/rae", &[("last-event-id", "0")]).await;
    assert_eq!(zero.text(), "one");
    // With nothing kept yet, `since=0` parks and its keepalive gives the start.
    let fresh = get(server.addr, "/poll/sid?since=0&timeout=0").await;
    assert_eq!(fresh.status, StatusCode::NO_CONTENT);
    assert!(fresh.cursor().ends_with("-0"));
}
