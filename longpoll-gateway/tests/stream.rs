//! GRIP stream mode, run for real: the `longpoll-gateway` binary in front of
//! a GRIP backend on 127.0.0.1 (`tests/support/streams.rs`), with clients
//! that read held responses as they arrive, over HTTP/1.1 and HTTP/2.

mod support;

use std::sync::atomic::Ordering;

use http::StatusCode;
use serde_json::json;
use support::streams::{Backend, Ending, Streamed, grip_path};
use support::{Conn, Gateway, Reply, eventually, get, within};

async fn setup(args: &[&str]) -> (Backend, Gateway) {
    let backend = Backend::start().await;
    let mut all = vec!["--sig-key", "sig-secret", "--grip-timeout-min", "1"];
    all.extend_from_slice(args);
    let gateway = Gateway::start(&backend.url(), &all).await;
    (backend, gateway)
}

async fn publish(gateway: &Gateway, body: &serde_json::Value) -> Reply {
    let mut conn = Conn::connect(gateway.publish).await;
    conn.send_with_body(
        "POST",
        "/publish/",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    conn.response(false).await
}

/// Publishes `http-stream` items, each `(channel, id, prev-id, content)`.
async fn publish_stream(gateway: &Gateway, items: &[(&str, Option<&str>, Option<&str>, &str)]) {
    let items: Vec<_> = items
        .iter()
        .map(|(channel, id, prev_id, content)| {
            json!({"channel": channel, "id": id, "prev-id": prev_id,
                   "formats": {"http-stream": {"content": content}}})
        })
        .collect();
    let reply = publish(gateway, &json!({ "items": items })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

async fn close(gateway: &Gateway, channel: &str) {
    let reply = publish(
        gateway,
        &json!({"items": [{"channel": channel, "formats": {"http-stream": {"action": "close"}}}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// A stream hold on `channels` (a `Grip-Channel` value) whose first body is
/// `start\n`, with more headers.
fn stream_path(channels: &str, more: &[(&str, &str)]) -> String {
    let mut headers = vec![
        ("grip-hold", "stream"),
        ("grip-channel", channels),
        ("content-type", "text/plain"),
    ];
    headers.extend_from_slice(more);
    grip_path(&headers, "start\n")
}

fn no_grip_headers(headers: &http::HeaderMap) {
    for name in headers.keys() {
        assert!(
            !name.as_str().starts_with("grip-"),
            "{name} reached the client"
        );
    }
}

#[tokio::test]
async fn a_stream_sends_its_response_at_once_then_every_item_until_closed() {
    let (_backend, gateway) = setup(&[]).await;
    let path = stream_path(
        "news, sports",
        &[("x-upstream", "1"), ("grip-status", "201 Streaming Now")],
    );
    let mut stream = Streamed::open(gateway.addr, &path, &[]).await;
    assert_eq!(stream.status, StatusCode::CREATED);
    let reason = stream.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"Streaming Now");
    assert_eq!(stream.header("content-type"), Some("text/plain"));
    assert_eq!(stream.header("x-upstream"), Some("1"));
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    assert_eq!(stream.header("content-length"), None);
    no_grip_headers(&stream.headers);
    assert_eq!(stream.until("start\n").await, "start\n");

    // Published right after the head: the stream was placed in its
    // channels' logs before the head went out, so nothing is missed.
    publish_stream(&gateway, &[("news", None, None, "one\n")]).await;
    assert_eq!(stream.until("one\n").await, "one\n");
    let binary = json!({"items": [{"channel": "sports",
        "formats": {"http-stream": {"content-bin": "dHdvCg=="}}}]});
    assert_eq!(publish(&gateway, &binary).await.status, StatusCode::OK);
    assert_eq!(stream.until("two\n").await, "two\n");
    // The form gripcontrol sends: the format on the item itself.
    let on_item = json!({"items": [{"channel": "news", "http-stream": {"content": "three\n"}}]});
    assert_eq!(publish(&gateway, &on_item).await.status, StatusCode::OK);
    assert_eq!(stream.until("three\n").await, "three\n");

    close(&gateway, "sports").await;
    assert_eq!(stream.end().await, (String::new(), Ending::Clean));
    gateway
        .metric_is("longpoll_gateway_grip_streaming", 0)
        .await;
    assert_eq!(
        gateway.metric("longpoll_gateway_grip_streams_total").await,
        1
    );
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_items_total")
            .await,
        3
    );
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_closed_total")
            .await,
        1
    );
    assert_eq!(gateway.metric("longpoll_gateway_stream_waiters").await, 0);
}

#[tokio::test]
async fn one_publish_serves_response_holds_polls_and_streams_with_its_reason() {
    let (_backend, gateway) = setup(&["--route", "/poll/{client}"]).await;
    let hold_path = grip_path(&[("grip-hold", "response"), ("grip-channel", "mixed")], "");
    let addr = gateway.addr;
    let hold = tokio::spawn(async move { Streamed::open(addr, &hold_path, &[]).await });
    let poll = tokio::spawn(async move { Streamed::open(addr, "/poll/mixed", &[]).await });
    let mut stream = Streamed::open(gateway.addr, &stream_path("mixed", &[]), &[]).await;
    stream.until("start\n").await;
    gateway.holding(1).await;
    gateway.waiters(2).await;

    let both = json!({"items": [{"channel": "mixed", "id": "1", "formats": {
        "http-response": {"code": 201, "reason": "Made Here", "headers": {"X-A": "1"}, "body": "whole"},
        "http-stream": {"content": "part\n"}}}]});
    let reply = publish(&gateway, &both).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(stream.until("part\n").await, "part\n");
    for (what, task) in [("hold", hold), ("poll", poll)] {
        let mut answered = within(what, task).await.unwrap();
        assert_eq!(answered.status, StatusCode::CREATED, "{what}");
        let reason = answered.extensions.get::<hyper::ext::ReasonPhrase>();
        assert_eq!(
            reason.map(|r| r.as_bytes()),
            Some(&b"Made Here"[..]),
            "{what}"
        );
        assert_eq!(answered.header("x-a"), Some("1"), "{what}");
        no_grip_headers(&answered.headers);
        assert_eq!(
            answered.end().await,
            ("whole".to_owned(), Ending::Clean),
            "{what}"
        );
    }
    assert_eq!(
        gateway
            .metric("longpoll_gateway_published_items_total")
            .await,
        1
    );
}

#[tokio::test]
async fn items_the_gateway_cannot_serve_are_refused() {
    let (_backend, gateway) = setup(&[]).await;
    let cases = [
        (
            json!({"items": [{"channel": "a", "formats": {"ws-message": {"content": 7}}}]}),
            "items[0].formats.ws-message needs one of content",
        ),
        (
            json!({"items": [{"channel": "a", "formats": {}}]}),
            "items[0].formats: no http-response, http-stream or ws-message format",
        ),
        (
            json!({"items": [{"channel": "a", "formats": {"http-stream": {"content": "ok"}}},
                             {"channel": "b", "http-stream": {}}]}),
            "items[1].http-stream has neither content nor content-bin",
        ),
        (
            json!({"items": [{"channel": "a", "formats": {"http-stream": {"action": "refresh"}}}]}),
            "items[0].formats.http-stream.action \"refresh\"",
        ),
        (
            json!({"items": [{"channel": "a", "meta": {"user": 7}, "formats": {"http-stream": {"content": "x"}}}]}),
            "items[0].meta.user is not a string",
        ),
    ];
    for (body, says) in &cases {
        let reply = publish(&gateway, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.text().starts_with(says), "{body}: {:?}", reply.text());
    }
    assert_eq!(
        gateway
            .metric("longpoll_gateway_published_stream_items_total")
            .await,
        0,
        "a refused publish publishes nothing"
    );
    let mixed = json!({"items": [{"channel": "a", "formats": {
        "http-stream": {"content": "x"}, "ws-message": {"content": "x"}}}]});
    assert_eq!(publish(&gateway, &mixed).await.status, StatusCode::OK);
    assert_eq!(
        gateway
            .metric("longpoll_gateway_published_stream_items_total")
            .await,
        1
    );
}

#[tokio::test]
async fn a_stream_with_prev_id_gets_exactly_what_followed_it_from_the_log() {
    let (_backend, gateway) = setup(&[]).await;
    publish_stream(
        &gateway,
        &[
            ("feed", Some("1"), Some("0"), "1\n"),
            ("feed", Some("2"), Some("1"), "2\n"),
            ("feed", Some("3"), Some("2"), "3\n"),
            ("feed", Some("4"), Some("3"), "4\n"),
            ("feed", Some("5"), Some("4"), "5\n"),
        ],
    )
    .await;
    // A client that had 2 and reconnects.
    let mut behind = Streamed::open(gateway.addr, &stream_path("feed; prev-id=2", &[]), &[]).await;
    assert_eq!(behind.until("5\n").await, "start\n3\n4\n5\n");
    // A client that has everything waits for what is new.
    let mut current = Streamed::open(gateway.addr, &stream_path("feed; prev-id=5", &[]), &[]).await;
    current.until("start\n").await;
    // A client whose prev-id is gone from the log but that the first kept
    // item names as its predecessor.
    let mut oldest = Streamed::open(gateway.addr, &stream_path("feed; prev-id=0", &[]), &[]).await;
    publish_stream(&gateway, &[("feed", Some("6"), Some("5"), "6\n")]).await;
    assert_eq!(behind.until("6\n").await, "6\n");
    assert_eq!(current.until("6\n").await, "6\n");
    assert_eq!(oldest.until("6\n").await, "start\n1\n2\n3\n4\n5\n6\n");
    // A stream without prev-id starts at the log's end.
    let mut fresh = Streamed::open(gateway.addr, &stream_path("feed", &[]), &[]).await;
    publish_stream(&gateway, &[("feed", Some("7"), Some("6"), "7\n")]).await;
    assert_eq!(fresh.until("7\n").await, "start\n7\n");
    assert_eq!(behind.until("7\n").await, "7\n");
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_recoveries_total")
            .await,
        0
    );

    // A close ends the streams of its time, not a client that comes back
    // from before it (as a browser's EventSource does after that close).
    close(&gateway, "feed").await;
    assert_eq!(behind.end().await.1, Ending::Clean);
    publish_stream(&gateway, &[("feed", Some("8"), Some("7"), "8\n")]).await;
    let mut again = Streamed::open(gateway.addr, &stream_path("feed; prev-id=7", &[]), &[]).await;
    assert_eq!(again.until("8\n").await, "start\n8\n");
    publish_stream(&gateway, &[("feed", Some("9"), Some("8"), "9\n")]).await;
    assert_eq!(again.until("9\n").await, "9\n");
    close(&gateway, "feed").await;
    assert_eq!(again.end().await, (String::new(), Ending::Clean));
}

#[tokio::test]
async fn a_prev_id_the_log_does_not_have_is_recovered_through_the_next_link() {
    let (backend, gateway) = setup(&[]).await;
    publish_stream(&gateway, &[("rec", Some("a1"), None, "a1\n")]).await;
    let recover = grip_path(
        &[("grip-hold", "stream"), ("grip-channel", "rec; prev-id=a1")],
        "recovered up to a1\n",
    )
    .replace("/grip?", "/grip/recover?");
    let link = format!("<{recover}>; rel=next");
    let path = stream_path("rec; prev-id=zz", &[("grip-link", &link)]);
    let mut stream = Streamed::open(gateway.addr, &path, &[]).await;
    assert_eq!(
        stream.until("recovered up to a1\n").await,
        "start\nrecovered up to a1\n"
    );
    let asked = backend.seen.requests_to("/grip/recover");
    assert_eq!(asked.len(), 1);
    let headers = &asked[0].1;
    assert_eq!(headers["grip-last"], "rec; last-id=zz");
    assert!(
        headers["grip-feature"]
            .to_str()
            .unwrap()
            .contains("link:next")
    );
    assert!(headers.contains_key("grip-sig"));
    assert_eq!(headers["host"], "test");
    publish_stream(&gateway, &[("rec", Some("a2"), Some("a1"), "a2\n")]).await;
    assert_eq!(stream.until("a2\n").await, "a2\n");
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_recoveries_total")
            .await,
        1
    );
}

#[tokio::test]
async fn next_links_page_a_response_and_refresh_a_stream() {
    let (backend, gateway) = setup(&[]).await;
    let mut paged = Streamed::open(gateway.addr, "/page/1", &[]).await;
    assert_eq!(paged.status, StatusCode::OK);
    assert_eq!(
        paged.end().await,
        ("page 1\npage 2\npage 3\n".to_owned(), Ending::Clean)
    );
    for page in ["/page/2", "/page/3"] {
        let asked = backend.seen.requests_to(page);
        assert_eq!(asked.len(), 1, "{page}");
        assert!(asked[0].1.contains_key("grip-sig"));
    }

    // A stream whose next link is fetched after 1 s without items; the
    // answer continues the stream on the same channel, without a next link.
    let refresh = grip_path(
        &[("grip-hold", "stream"), ("grip-channel", "fresh")],
        "refreshed\n",
    )
    .replace("/grip?", "/grip/refresh?");
    let link = format!("<{refresh}>; rel=next; timeout=1");
    let mut stream = Streamed::open(
        gateway.addr,
        &stream_path("fresh", &[("grip-link", &link)]),
        &[],
    )
    .await;
    assert_eq!(stream.until("refreshed\n").await, "start\nrefreshed\n");
    publish_stream(&gateway, &[("fresh", None, None, "after\n")]).await;
    assert_eq!(stream.until("after\n").await, "after\n");
    assert_eq!(backend.seen.requests_to("/grip/refresh").len(), 1);
}

#[tokio::test]
async fn keep_alives_are_written_while_a_stream_is_quiet() {
    let (_backend, gateway) = setup(&[]).await;
    let path = stream_path(
        "quiet",
        &[("grip-keep-alive", r":ka\n; format=cstring; timeout=1")],
    );
    let mut stream = Streamed::open(gateway.addr, &path, &[]).await;
    assert_eq!(stream.until(":ka\n").await, "start\n:ka\n");
    assert_eq!(stream.until(":ka\n").await, ":ka\n");
    assert!(
        gateway
            .metric("longpoll_gateway_grip_stream_keepalives_total")
            .await
            >= 2
    );
}

#[tokio::test]
async fn filters_and_meta_decide_what_each_stream_gets() {
    let (_backend, gateway) = setup(&[]).await;
    let path = stream_path(
        "room; prev-id=0; filter=skip-users; filter=build-id; filter=var-subst, user-alice; filter=require-sub",
        &[(
            "grip-set-meta",
            r#"user="alice", id_format="room:%(room)s", greeting="hi""#,
        )],
    );
    let mut stream = Streamed::open(gateway.addr, &path, &[]).await;
    stream.until("start\n").await;
    let item = |id: &str,
                prev: &str,
                content: &str,
                filters: serde_json::Value,
                meta: serde_json::Value| {
        json!({"channel": "room", "id": id, "prev-id": prev, "meta": meta,
               "formats": {"http-stream": {"content": content, "content-filters": filters}}})
    };
    let both = json!(["build-id", "var-subst"]);
    let reply = publish(
        &gateway,
        &json!({"items": [
            // Each filter takes one level of `%%`: build-id, then var-subst.
            item("1", "0", "id %I: %%(greeting)s 100%%%%\n", both.clone(), json!({})),
            // Skipped: alice is among the users to skip.
            item("2", "1", "not for alice\n", both.clone(), json!({"skip_users": "bob,alice"})),
            // Dropped: its content filters are not the channel's.
            item("3", "2", "wrong filters\n", json!(["build-id"]), json!({})),
        ]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(stream.until("\n").await, "id room:1: hi 100%\n");
    let kicks = json!({"items": [
        {"channel": "user-alice", "meta": {"require_sub": "elsewhere"},
         "formats": {"http-stream": {"content": "not subscribed\n"}}},
        {"channel": "user-alice", "meta": {"require_sub": "room"},
         "formats": {"http-stream": {"content": "kick\n"}}},
    ]});
    assert_eq!(publish(&gateway, &kicks).await.status, StatusCode::OK);
    assert_eq!(stream.until("\n").await, "kick\n");
    let reply = publish(
        &gateway,
        &json!({"items": [item("4", "3", "id %I\n", both, json!({"skip_users": "bob"}))]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(stream.until("\n").await, "id room:4\n");
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_filtered_total")
            .await,
        3
    );
}

#[tokio::test]
async fn a_client_that_goes_away_is_reported_once_and_a_closed_stream_not_at_all() {
    let (backend, gateway) = setup(&[]).await;
    let gone = [("grip-link", "</gone-hook?who=1>; rel=gone")];
    let mut stream = Streamed::open(gateway.addr, &stream_path("bye", &gone), &[]).await;
    stream.until("start\n").await;
    drop(stream);
    gateway
        .metric_is("longpoll_gateway_grip_stream_gone_total", 1)
        .await;
    gateway
        .metric_is("longpoll_gateway_grip_streaming", 0)
        .await;
    let seen = backend.seen.clone();
    eventually("the gone hook", || {
        seen.gone_hooks.load(Ordering::SeqCst) == 1
    })
    .await;
    let hooked = backend.seen.requests_to("/gone-hook?who=1");
    assert!(hooked[0].1.contains_key("grip-sig"));

    // Closed by a publish: the client did not go away.
    let mut closed = Streamed::open(gateway.addr, &stream_path("bye", &gone), &[]).await;
    closed.until("start\n").await;
    close(&gateway, "bye").await;
    assert_eq!(closed.end().await.1, Ending::Clean);
    drop(closed);
    gateway
        .metric_is("longpoll_gateway_grip_stream_closed_total", 1)
        .await;
    // A request through the gateway after the stream ended: a gone hook
    // the stream had started would have been sent before it.
    assert_eq!(get(gateway.addr, "/page/3").await.text(), "page 3\n");
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_gone_posts_total")
            .await,
        1
    );
    assert_eq!(backend.seen.gone_hooks.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off_at_the_bound() {
    let (backend, gateway) = setup(&["--stream-buffer", "65536"]).await;
    let gone = [("grip-link", "</gone-hook?who=slow>; rel=gone")];
    // A raw connection with a small receive window that stops reading
    // after the head.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = within("connect", socket.connect(gateway.addr))
        .await
        .unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: test\r\n\r\n",
        stream_path("flood", &gone)
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, request.as_bytes())
        .await
        .unwrap();
    gateway
        .metric_is("longpoll_gateway_stream_waiters", 1)
        .await;
    // 8 MiB in 64 KiB items, far more than the socket buffers hold.
    let content = "x".repeat(64 * 1024);
    let mut published = 0;
    for _ in 0..8 {
        let items: Vec<_> = (0..16)
            .map(|_| json!({"channel": "flood", "formats": {"http-stream": {"content": content}}}))
            .collect();
        let reply = publish(&gateway, &json!({ "items": items })).await;
        assert_eq!(reply.status, StatusCode::OK);
        published += 16 * content.len();
    }
    gateway
        .metric_is("longpoll_gateway_grip_stream_slow_readers_total", 1)
        .await;
    gateway
        .metric_is("longpoll_gateway_grip_streaming", 0)
        .await;
    let seen = backend.seen.clone();
    eventually("the gone hook", || {
        seen.gone_hooks.load(Ordering::SeqCst) == 1
    })
    .await;
    // The connection was closed with most of it unsent, and no last chunk.
    let mut received = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut received);
    let _ = within("the cut connection to end", read).await;
    assert!(
        received.len() < published / 2,
        "{} of {published} bytes",
        received.len()
    );
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "the stream ended cleanly"
    );
}

#[tokio::test]
async fn streams_over_http2_end_cleanly() {
    let (_backend, gateway) = setup(&[]).await;
    let mut stream = Streamed::open_h2(gateway.addr, &stream_path("h2", &[])).await;
    assert_eq!(stream.version, http::Version::HTTP_2);
    assert_eq!(stream.status, StatusCode::OK);
    no_grip_headers(&stream.headers);
    stream.until("start\n").await;
    publish_stream(&gateway, &[("h2", None, None, "over h2\n")]).await;
    assert_eq!(stream.until("over h2\n").await, "over h2\n");
    close(&gateway, "h2").await;
    assert_eq!(stream.end().await, (String::new(), Ending::Clean));
}

#[tokio::test]
async fn stream_limits_answer_503_and_free_their_places() {
    let (_backend, gateway) =
        setup(&["--max-streams", "2", "--max-streams-per-channel", "1"]).await;
    let mut first = Streamed::open(gateway.addr, &stream_path("one", &[]), &[]).await;
    first.until("start\n").await;
    let mut refused = Streamed::open(gateway.addr, &stream_path("one", &[]), &[]).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    let (text, _) = refused.end().await;
    assert!(text.contains("--max-streams-per-channel"), "{text}");
    let mut second = Streamed::open(gateway.addr, &stream_path("two", &[]), &[]).await;
    second.until("start\n").await;
    let mut third = Streamed::open(gateway.addr, &stream_path("three", &[]), &[]).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.end().await.0.contains("--max-streams"));
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_refused_total")
            .await,
        2
    );
    close(&gateway, "one").await;
    first.end().await;
    gateway
        .metric_is("longpoll_gateway_grip_streaming", 1)
        .await;
    let mut again = Streamed::open(gateway.addr, &stream_path("one", &[]), &[]).await;
    assert_eq!(again.until("start\n").await, "start\n");
}

#[tokio::test]
async fn sigterm_ends_every_stream_cleanly() {
    let (_backend, gateway) = setup(&[]).await;
    let mut h1 = Streamed::open(gateway.addr, &stream_path("stop", &[]), &[]).await;
    let mut h2 = Streamed::open_h2(gateway.addr, &stream_path("stop", &[])).await;
    h1.until("start\n").await;
    h2.until("start\n").await;
    gateway.send_term();
    assert_eq!(h1.end().await, (String::new(), Ending::Clean));
    assert_eq!(h2.end().await, (String::new(), Ending::Clean));
    assert_eq!(gateway.exit().await.code(), Some(0));
}

#[tokio::test]
async fn two_gateways_on_one_redis_share_the_stream_log() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-gw-stream-{:016x}", fastrand::u64(..));
    let shared = ["--redis", url.as_str(), "--redis-prefix", prefix.as_str()];
    let (backend, a) = setup(&shared).await;
    let mut args = vec!["--sig-key", "sig-secret"];
    args.extend_from_slice(&shared);
    let b = Gateway::start(&backend.url(), &args).await;

    let mut on_a = Streamed::open(a.addr, &stream_path("shared", &[]), &[]).await;
    on_a.until("start\n").await;
    publish_stream(&b, &[("shared", Some("1"), None, "via b\n")]).await;
    assert_eq!(on_a.until("via b\n").await, "via b\n");
    drop(on_a);
    // Published through A while the client is away; it reconnects to B.
    publish_stream(
        &a,
        &[
            ("shared", Some("2"), Some("1"), "2\n"),
            ("shared", Some("3"), Some("2"), "3\n"),
        ],
    )
    .await;
    let mut on_b = Streamed::open(b.addr, &stream_path("shared; prev-id=1", &[]), &[]).await;
    assert_eq!(on_b.until("3\n").await, "start\n2\n3\n");
}
