//! Every bad input gets a clear answer; nothing is lost and nothing panics.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{Conn, Reply, TestServer, get, request};
use tower_longpoll::{ClientId, Event, Hub, InvalidId, LongPollLayer, PublishError};

async fn server() -> TestServer {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_millis(200))
        .batching(8)
        .build();
    TestServer::start(layer).await
}

#[track_caller]
fn assert_refused(reply: &Reply, status: StatusCode, says: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        reply.text().contains(says),
        "{:?} does not say {says:?}",
        reply.text()
    );
    assert!(reply.text().len() < 200, "error bodies are short");
}

#[tokio::test]
async fn bad_ids_are_refused_with_400() {
    let server = server().await;
    let addr = server.addr;
    assert_refused(
        &get(addr, "/poll/").await,
        StatusCode::BAD_REQUEST,
        "it is empty",
    );
    for control in ["%00", "a%0Ab", "%0D", "%7F", "%C2%85"] {
        let reply = get(addr, &format!("/poll/{control}")).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, "control character");
    }
    assert_refused(
        &get(addr, "/poll/%FF%FE").await,
        StatusCode::BAD_REQUEST,
        "not valid UTF-8",
    );

    let longest = "x".repeat(256);
    let ok = get(addr, &format!("/poll/{longest}?timeout=0")).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "256 bytes is allowed");
    let too_long = "x".repeat(257);
    assert_refused(
        &get(addr, &format!("/poll/{too_long}")).await,
        StatusCode::BAD_REQUEST,
        "257 bytes long, the limit is 256",
    );

    // Measured once decoded: 256 encoded bytes are fine, 257 are not.
    let encoded = "%41".repeat(256);
    assert_eq!(
        get(addr, &format!("/poll/{encoded}?timeout=0"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let encoded = "%41".repeat(257);
    assert_refused(
        &get(addr, &format!("/poll/{encoded}")).await,
        StatusCode::BAD_REQUEST,
        "257 bytes long",
    );
    let huge = "y".repeat(10_000);
    assert_refused(
        &get(addr, &format!("/poll/{huge}")).await,
        StatusCode::BAD_REQUEST,
        "10000 bytes long, the limit is 256",
    );

    let stats = server.hub.stats();
    assert_eq!(stats.rejected, 10);
    assert_eq!(stats.parked, 0);
}

#[tokio::test]
async fn a_missing_id_names_where_it_was_expected() {
    let hub = Hub::new();
    let layer = LongPollLayer::builder(hub.clone())
        .route("/events")
        .client_id(ClientId::header("x-client"))
        .timeout(Duration::from_millis(100))
        .build();
    let server = TestServer::start(layer).await;
    let reply = get(server.addr, "/events").await;
    assert_refused(
        &reply,
        StatusCode::BAD_REQUEST,
        "missing client id: expected it in the header `x-client`",
    );
    let reply = request(server.addr, "GET", "/events", &[("x-client", "")]).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, "it is empty");
    hub.publish("zed", Event::new("by header")).await.unwrap();
    let reply = request(server.addr, "GET", "/events", &[("x-client", "zed")]).await;
    assert_eq!(reply.text(), "by header");
}

#[tokio::test]
async fn malformed_cursors_timeouts_and_batches_are_refused_with_400() {
    let server = server().await;
    let addr = server.addr;
    for query in [
        "since=abc",
        "since=0123456789abcdef",
        "since=0123456789abcdef-x",
        "since=%FF",
    ] {
        assert_refused(
            &get(addr, &format!("/poll/a?{query}")).await,
            StatusCode::BAD_REQUEST,
            "malformed cursor in the query parameter `since`",
        );
    }
    let reply = request(addr, "GET", "/poll/a", &[("last-event-id", "42")]).await;
    assert_refused(
        &reply,
        StatusCode::BAD_REQUEST,
        "malformed cursor in the header `Last-Event-ID`",
    );
    for etag in [
        "*",
        "\"nope\"",
        "0123456789abcdef-1",
        "\"0123456789abcdef-1\", \"0123456789abcdef-2\"",
    ] {
        let reply = request(addr, "GET", "/poll/a", &[("if-none-match", etag)]).await;
        assert_refused(
            &reply,
            StatusCode::BAD_REQUEST,
            "malformed cursor in the header `If-None-Match`",
        );
    }
    for timeout in ["-1", "abc", "1e3", "", "1.", "NaN"] {
        assert_refused(
            &get(addr, &format!("/poll/a?timeout={timeout}")).await,
            StatusCode::BAD_REQUEST,
            "malformed timeout",
        );
    }
    for batch in ["0", "-2", "many"] {
        assert_refused(
            &get(addr, &format!("/poll/a?batch={batch}")).await,
            StatusCode::BAD_REQUEST,
            "malformed batch",
        );
    }
    assert_refused(
        &get(addr, "/poll/a?since=&since=").await,
        StatusCode::BAD_REQUEST,
        "`since` is given more than once",
    );
    assert_eq!(server.hub.stats().parked, 0);
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let server = server().await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let reply = request(server.addr, method, "/poll/a", &[]).await;
        assert_refused(&reply, StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
}

#[tokio::test]
async fn a_poll_with_a_small_body_parks_and_a_large_body_gets_413() {
    let server = server().await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send_with_body("GET", "/poll/bodied", &[], b"ignored body")
        .await;
    server.parked(1).await;
    server
        .hub
        .publish("bodied", Event::new("still delivered"))
        .await
        .unwrap();
    assert_eq!(conn.response(false).await.text(), "still delivered");

    let mut conn = Conn::connect(server.addr).await;
    conn.send_with_body("GET", "/poll/bodied", &[], &vec![b'x'; 64 * 1024])
        .await;
    let reply = conn.response(false).await;
    assert_refused(&reply, StatusCode::PAYLOAD_TOO_LARGE, "at most 16384 bytes");
}

#[tokio::test]
async fn publish_refuses_what_it_cannot_keep_and_keeps_nothing() {
    let hub = Hub::builder().max_event_bytes(10).build();
    let err = hub
        .publish("a", Event::new("01234567890"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::TooLarge {
                size: 11,
                limit: 10
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the event is 11 bytes, more than the limit of 10 bytes"
    );

    let err = hub.publish("", Event::new("x")).await.unwrap_err();
    assert!(
        matches!(err, PublishError::InvalidId(InvalidId::Empty)),
        "{err}"
    );
    let err = hub.publish("a\nb", Event::new("x")).await.unwrap_err();
    assert!(
        matches!(err, PublishError::InvalidId(InvalidId::ControlCharacter)),
        "{err}"
    );
    let err = hub
        .publish("x".repeat(300), Event::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::InvalidId(InvalidId::TooLong {
                len: 300,
                limit: 256
            })
        ),
        "{err}"
    );

    let err = hub
        .publish("a", Event::new("x").content_type("bad\nvalue"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::InvalidContentType), "{err}");

    for status in [101, 103, 199, 600, 999] {
        let status = http::StatusCode::from_u16(status).unwrap();
        let err = hub
            .publish("a", Event::new("x").status(status))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::InvalidStatus(s) if s == status),
            "{err}"
        );
    }
    let err = hub
        .publish("a", Event::new("x").status(http::StatusCode::NO_CONTENT))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no 204 or 304 with a body"),
        "{err}"
    );

    let stats = hub.stats();
    assert_eq!((stats.published, stats.kept_events, stats.ids), (0, 0, 0));
    assert_eq!(
        hub.publish("a", Event::new("0123456789"))
            .await
            .unwrap()
            .seq(),
        1
    );
}

#[tokio::test]
async fn the_server_still_serves_after_all_that() {
    let server = server().await;
    let addr = server.addr;
    for path in [
        "/poll/%00",
        "/poll/",
        "/poll/a?since=x",
        "/poll/a?timeout=x",
    ] {
        assert_eq!(get(addr, path).await.status, StatusCode::BAD_REQUEST);
    }
    server.hub.publish("fine", Event::new("ok")).await.unwrap();
    assert_eq!(get(addr, "/poll/fine").await.text(), "ok");
    assert_eq!(get(addr, "/").await.text(), "index");
}

#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408_at_the_timeout() {
    let server = server().await;
    let mut conn = Conn::connect(server.addr).await;
    // Announces 1,000 bytes, sends 10.
    conn.send_with_body("GET", "/poll/slow", &[("content-length", "1000")], b"")
        .await;
    conn.send_raw(b"0123456789").await;
    let reply = conn.response(false).await;
    assert_refused(
        &reply,
        StatusCode::REQUEST_TIMEOUT,
        "did not arrive before the poll's timeout",
    );
    assert_eq!(server.hub.stats().parked, 0);
}

#[tokio::test]
async fn a_zero_timeout_poll_with_a_body_reads_the_body_then_answers() {
    let server = server().await;
    let mut conn = Conn::connect(server.addr).await;
    conn.send_with_body("GET", "/poll/zero?timeout=0", &[], b"some body")
        .await;
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.header("etag").is_some());
}
