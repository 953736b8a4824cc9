//! The `longpoll-gateway` binary, run for real in front of a real upstream
//! on 127.0.0.1: proxying, GRIP holds, publishing, operations.

mod support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::upstream::{BIG, Generated, Upstream, pattern};
use support::{Conn, Reply, eventually, get, request, within};
use support::{Gateway, jwt, now, verified_claims};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SIG_KEY: &[u8] = b"sig-secret";

async fn setup(args: &[&str]) -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let mut all = vec![
        "--sig-key",
        "sig-secret",
        "--sig-iss",
        "test-gateway",
        "--grip-timeout-min",
        "1",
    ];
    all.extend_from_slice(args);
    let gateway = Gateway::start(&upstream.url(), &all).await;
    (upstream, gateway)
}

/// `POST /publish/` with this JSON and these headers.
async fn publish(gateway: &Gateway, json: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let mut conn = Conn::connect(gateway.publish).await;
    conn.send_with_body("POST", "/publish/", &all, json.as_bytes())
        .await;
    conn.response(false).await
}

fn no_grip_headers(reply: &Reply) {
    for name in reply.headers.keys() {
        assert!(
            !name.as_str().starts_with("grip-"),
            "{name} reached the client"
        );
    }
}

/// A hyper HTTP/1.1 client connection to `addr`.
async fn http1(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>,
> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn check_pattern(body: &[u8]) {
    assert_eq!(body.len(), BIG);
    if let Some(at) = (0..body.len()).find(|&i| body[i] != pattern(i)) {
        panic!("byte {at} differs");
    }
}

#[tokio::test]
async fn ten_mib_stream_both_ways() {
    let (_upstream, gateway) = setup(&[]).await;
    let mut client = http1(gateway.addr).await;

    // Upstream → client: 10 MiB of chunks with no length announced.
    let response = client
        .send_request(
            http::Request::get("/big")
                .header("host", "test")
                .body(http_body_util::Empty::new().boxed_unsync())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("10 MiB down", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    check_pattern(&body);

    // Client → upstream → client: 10 MiB echoed as it streams.
    let response = client
        .send_request(
            http::Request::post("/echo")
                .header("host", "test")
                .body(Generated::new(BIG).boxed_unsync())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("10 MiB echoed", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    check_pattern(&body);
}

#[tokio::test]
async fn bodies_are_streamed_not_buffered() {
    let (upstream, gateway) = setup(&[]).await;

    // The response's first chunk reaches the client while the upstream is
    // still holding back the rest.
    let mut client = http1(gateway.addr).await;
    let response = client
        .send_request(
            http::Request::get("/gated")
                .header("host", "test")
                .body(http_body_util::Empty::new().boxed_unsync())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "first;");
    upstream.seen.gate.notify_one();
    let rest = within("the rest", body.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, "second");

    // The request's first chunk reaches the upstream while the client still
    // holds back the rest of its body.
    let mut client = http1(gateway.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Bytes::from_static(b"early")).await.unwrap();
    let response = within(
        "the upstream's answer to the first chunk",
        client.send_request(
            http::Request::post("/first-chunk")
                .header("host", "test")
                .body(support::upstream::Channel(rx).boxed_unsync())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    let body = within("its body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "early");
    drop(tx);
}

#[tokio::test]
async fn requests_are_signed_and_cleaned_before_the_upstream() {
    let (_upstream, gateway) = setup(&[]).await;
    let reply = request(
        gateway.addr,
        "GET",
        "/headers",
        &[
            ("grip-sig", "forged"),
            ("grip-hold", "response"),
            ("grip-last", "x; last-id=1"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "10.9.8.7"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let one = |name: &str| seen[name][0].as_str().map(str::to_owned);
    let sig = one("grip-sig").expect("a Grip-Sig");
    assert_eq!(seen["grip-sig"].as_array().unwrap().len(), 1);
    let claims = verified_claims(&sig, SIG_KEY).expect("signed with --sig-key");
    assert_eq!(claims["iss"], "test-gateway");
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now() && exp <= now() + 3600, "a short exp: {exp}");
    for gone in [
        "grip-hold",
        "grip-last",
        "x-private",
        "keep-alive",
        "connection",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} was forwarded: {seen}");
    }
    assert_eq!(one("x-kept").as_deref(), Some("yes"));
    assert_eq!(one("host").as_deref(), Some("test"));
    assert_eq!(
        one("x-forwarded-for").as_deref(),
        Some("10.9.8.7, 127.0.0.1")
    );
    assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn a_grip_hold_is_released_by_a_publish() {
    let (_upstream, gateway) = setup(&[]).await;
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/hold/news", &[]).await;
    gateway.holding(1).await;

    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "news", "id": "1", "formats": {"http-response": {
            "code": 201, "reason": "Made",
            "headers": {"Content-Type": "application/json", "X-Pub": "yes"},
            "body": "{\"n\":1}"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.text());
    assert_eq!(published.text(), "Published\n");

    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.text(), r#"{"n":1}"#);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-pub"), Some("yes"));
    assert_eq!(
        reply.header("x-upstream"),
        None,
        "the upstream's timeout response is not used"
    );
    no_grip_headers(&reply);
    gateway.holding(0).await;
    gateway.waiters(0).await;
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_hold_events_total")
            .await,
        1
    );
}

#[tokio::test]
async fn on_timeout_the_client_gets_the_upstreams_response_without_grip_headers() {
    let (_upstream, gateway) = setup(&[]).await;
    let reply = get(gateway.addr, "/hold/quiet?timeout=1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "Grip-Status wins");
    assert_eq!(reply.text(), "timeout body");
    assert_eq!(reply.header("x-upstream"), Some("1"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("content-length"), Some("12"));
    no_grip_headers(&reply);
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_hold_timeouts_total")
            .await,
        1
    );

    // The JSON form: its `response` is the timeout response.
    let reply = get(gateway.addr, "/hold-json/quiet?timeout=1").await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.text(), "json timeout body");
    assert_eq!(reply.header("x-json"), Some("yes"));
    no_grip_headers(&reply);
}

#[tokio::test]
async fn the_json_form_holds_and_publishes_with_body_bin() {
    let (_upstream, gateway) = setup(&[]).await;
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/hold-json/bin", &[]).await;
    gateway.holding(1).await;
    // The item form gripcontrol sends: `http-response` on the item itself.
    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "bin", "http-response": {"body-bin": "AAH/"}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.text());
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"\x00\x01\xff");
    no_grip_headers(&reply);
}

#[tokio::test]
async fn a_publish_with_nobody_held_is_kept_for_the_next_hold() {
    let (_upstream, gateway) = setup(&[]).await;
    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "later", "formats": {"http-response": {"body": "kept"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK);
    let reply = get(gateway.addr, "/hold/later").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "kept");
    // Delivered: the next hold waits for something new.
    let reply = get(gateway.addr, "/hold/later?timeout=1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// hyper never polls an empty body (nor a `204`'s): such an event is
/// committed as its response is handed over, so the next holds wait for
/// what comes after it instead of getting it again at once.
#[tokio::test]
async fn empty_and_204_publishes_are_delivered_once_then_later_events_follow() {
    let (_upstream, gateway) = setup(&[]).await;
    for (item, status) in [
        (r#"{"body": ""}"#, StatusCode::OK),
        (r#"{"code": 204}"#, StatusCode::NO_CONTENT),
    ] {
        let published = publish(
            &gateway,
            &format!(
                r#"{{"items": [{{"channel": "empty", "formats": {{"http-response": {item}}}}}]}}"#
            ),
            &[],
        )
        .await;
        assert_eq!(published.status, StatusCode::OK, "{}", published.text());
        let reply = get(gateway.addr, "/hold/empty").await;
        assert_eq!(reply.status, status, "{item}");
        assert!(reply.body.is_empty());
        // Delivered: the next hold waits, and times out with the upstream's answer.
        let reply = get(gateway.addr, "/hold/empty?timeout=1").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{item} came again");
        assert_eq!(reply.text(), "timeout body");
    }
    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "empty", "formats": {"http-response": {"body": "later"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK);
    let reply = get(gateway.addr, "/hold/empty").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "later"));
}

/// A publisher retrying after a lost reply sends the same `Idempotency-Key`:
/// the retry keeps nothing new (both the GRIP items form and the plain
/// form), and the plain form answers with the first cursor.
#[tokio::test]
async fn a_publish_retried_with_its_idempotency_key_is_kept_once() {
    let (_upstream, gateway) = setup(&[]).await;
    for _ in 0..2 {
        let published = publish(
            &gateway,
            r#"{"items": [{"channel": "once", "formats": {"http-response": {"body": "kept"}}}]}"#,
            &[("idempotency-key", "k-1")],
        )
        .await;
        assert_eq!(published.status, StatusCode::OK, "{}", published.text());
    }
    let reply = get(gateway.addr, "/hold/once").await;
    assert_eq!(reply.text(), "kept");
    let reply = get(gateway.addr, "/hold/once?timeout=1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "kept twice");

    let mut etags = Vec::new();
    for _ in 0..2 {
        let mut raw = Conn::connect(gateway.publish).await;
        raw.send_with_body(
            "POST",
            "/publish/once",
            &[("idempotency-key", "k-2")],
            b"raw",
        )
        .await;
        let reply = raw.response(false).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        etags.push(reply.header("etag").unwrap().to_owned());
    }
    assert_eq!(etags[0], etags[1]);
    let reply = get(gateway.addr, "/hold/once").await;
    assert_eq!(reply.text(), "raw");
    let reply = get(gateway.addr, "/hold/once?timeout=1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "kept twice");
}

#[tokio::test]
async fn a_hold_on_several_channels_ends_with_the_first_publish() {
    let (_upstream, gateway) = setup(&[]).await;
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/multi", &[]).await;
    gateway.holding(1).await;
    gateway.waiters(2).await;
    let mut plain = Conn::connect(gateway.publish).await;
    plain
        .send_with_body(
            "POST",
            "/publish/m2",
            &[("content-type", "text/plain")],
            b"on m2",
        )
        .await;
    assert_eq!(plain.response(false).await.status, StatusCode::ACCEPTED);
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "on m2");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    gateway.waiters(0).await;
}

#[tokio::test]
async fn a_prev_id_behind_the_channel_retries_with_grip_last() {
    let (upstream, gateway) = setup(&[]).await;
    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "feed", "id": "2", "prev-id": "1",
            "formats": {"http-response": {"body": "second"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK);

    // The client has 1, the channel is at 2: the upstream is asked again.
    let reply = get(gateway.addr, "/prev/1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "caught up: feed; last-id=2");
    assert_eq!(upstream.seen.prev_requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        gateway.metric("longpoll_gateway_grip_retries_total").await,
        1
    );

    // The client has 2, the channel's last: it waits for what follows 2,
    // not for the kept event 2.
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/prev/2", &[]).await;
    gateway.holding(1).await;
    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "feed", "id": "3", "prev-id": "2",
            "formats": {"http-response": {"body": "third"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK);
    let reply = client.response(false).await;
    assert_eq!(reply.text(), "third");
    assert_eq!(upstream.seen.prev_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_held_client_that_goes_away_is_reported_with_grip_link_gone() {
    let (upstream, gateway) = setup(&[]).await;
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/gone", &[]).await;
    gateway.holding(1).await;
    client.reset();
    gateway.holding(0).await;
    gateway.waiters(0).await;
    let seen = upstream.seen.clone();
    eventually("the gone hook is called", || {
        seen.gone_hooks.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(upstream.seen.gone_hooks_signed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn publishing_needs_the_token_when_one_is_set() {
    let (_upstream, gateway) = setup(&["--publish-token", "s3cret"]).await;
    let item = r#"{"items": [{"channel": "a", "formats": {"http-response": {"body": "x"}}}]}"#;
    let reply = publish(&gateway, item, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let reply = publish(&gateway, item, &[("authorization", "Bearer s3cre")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = publish(&gateway, item, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut raw = Conn::connect(gateway.publish).await;
    raw.send_with_body("POST", "/publish/a", &[], b"x").await;
    assert_eq!(raw.response(false).await.status, StatusCode::UNAUTHORIZED);
    // Metrics and health stay open.
    assert_eq!(
        get(gateway.publish, "/healthz").await.status,
        StatusCode::OK
    );
    assert_eq!(
        gateway
            .metric("longpoll_gateway_publish_unauthorized_total")
            .await,
        3
    );
    assert_eq!(gateway.metric("longpoll_events_published_total").await, 1);
}

#[tokio::test]
async fn publishing_takes_a_jwt_signed_with_the_publish_key() {
    let (_upstream, gateway) = setup(&["--publish-key", "pub-key"]).await;
    let item = r#"{"items": [{"channel": "a", "formats": {"http-response": {"body": "x"}}}]}"#;
    let good = jwt(
        &format!(r#"{{"iss":"me","exp":{}}}"#, now() + 60),
        b"pub-key",
    );
    let expired = jwt(
        &format!(r#"{{"iss":"me","exp":{}}}"#, now() - 10),
        b"pub-key",
    );
    let wrong_key = jwt(&format!(r#"{{"iss":"me","exp":{}}}"#, now() + 60), b"other");
    let no_exp = jwt(r#"{"iss":"me"}"#, b"pub-key");
    for (token, status) in [
        (good.as_str(), StatusCode::OK),
        (expired.as_str(), StatusCode::UNAUTHORIZED),
        (wrong_key.as_str(), StatusCode::UNAUTHORIZED),
        (no_exp.as_str(), StatusCode::UNAUTHORIZED),
        ("pub-key", StatusCode::UNAUTHORIZED),
    ] {
        let bearer = format!("Bearer {token}");
        let reply = publish(&gateway, item, &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, status, "{token}: {}", reply.text());
    }
    let reply = publish(&gateway, item, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_publishes_are_400_naming_the_item_and_field_and_publish_nothing() {
    let (_upstream, gateway) = setup(&[]).await;
    let cases = [
        ("{not json", "not JSON"),
        (r#"{"item": []}"#, "items is missing"),
        (r#"{"items": [1]}"#, "items[0] is not an object"),
        (
            r#"{"items": [{"channel": "ok", "formats": {"http-response": {"body": "x"}}},
                          {"formats": {"http-response": {"body": "x"}}}]}"#,
            "items[1].channel",
        ),
        (
            r#"{"items": [{"channel": "a", "formats": {"http-response": {"code": 99}}}]}"#,
            "items[0].formats.http-response.code",
        ),
        (
            r#"{"items": [{"channel": "a", "formats": {"http-response": {"body": "a", "body-bin": "YQ=="}}}]}"#,
            "items[0].formats.http-response: body and body-bin",
        ),
        (
            r#"{"items": [{"channel": "a", "formats": {"http-response": {"body-bin": "%%%"}}}]}"#,
            "items[0].formats.http-response.body-bin",
        ),
        (
            r#"{"items": [{"channel": "a", "formats": {"http-response": {"headers": {"X": 1}}}}]}"#,
            "items[0].formats.http-response.headers.X",
        ),
        (
            r#"{"items": [{"channel": "a", "id": 7, "formats": {"http-response": {}}}]}"#,
            "items[0].id",
        ),
    ];
    for (json, expected) in cases {
        let reply = publish(&gateway, json, &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{json}");
        assert!(
            reply.text().contains(expected),
            "{json}: {:?} does not name {expected:?}",
            reply.text()
        );
    }
    assert_eq!(gateway.metric("longpoll_events_published_total").await, 0);
    assert_eq!(
        gateway
            .metric("longpoll_gateway_publish_bad_requests_total")
            .await,
        cases.len() as u64
    );
}

#[tokio::test]
async fn upstream_failures_are_502_and_504() {
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let gateway = Gateway::start(&format!("http://{closed}"), &[]).await;
    let reply = get(gateway.addr, "/anything").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    drop(gateway);

    let (_upstream, gateway) = setup(&["--upstream-timeout", "0.3"]).await;
    let reply = get(gateway.addr, "/slow").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let reply = get(gateway.addr, "/bad-grip").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.text().contains("stream"), "{}", reply.text());
    let reply = get(gateway.addr, "/hello").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello");
    assert_eq!(
        gateway
            .metric("longpoll_gateway_upstream_timeouts_total")
            .await,
        1
    );
}

#[tokio::test]
async fn upgrades_pass_through() {
    let (_upstream, gateway) = setup(&[]).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("the 101 head", stream.read_exact(&mut byte))
            .await
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    within("the echo", stream.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    assert_eq!(gateway.metric("longpoll_gateway_upgrades_total").await, 1);
}

#[tokio::test]
async fn route_polls_are_held_by_the_gateway_itself() {
    let (_upstream, gateway) = setup(&["--route", "/poll/{client}", "--timeout", "20"]).await;
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/poll/alice", &[]).await;
    gateway.waiters(1).await;
    let mut plain = Conn::connect(gateway.publish).await;
    plain
        .send_with_body(
            "POST",
            "/publish/alice",
            &[("content-type", "application/json")],
            b"{\"hi\":1}",
        )
        .await;
    let published = plain.response(false).await;
    assert_eq!(published.status, StatusCode::ACCEPTED);
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "{\"hi\":1}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("etag"), published.header("etag"));
    // Everything else still reaches the upstream.
    assert_eq!(get(gateway.addr, "/hello").await.text(), "hello");
}

#[tokio::test]
async fn http2_without_tls_multiplexes_held_requests() {
    let (_upstream, gateway) = setup(&["--route", "/poll/{client}"]).await;
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let send = |path: &'static str| {
        let mut sender = sender.clone();
        tokio::spawn(async move {
            let response = sender
                .send_request(
                    http::Request::get(format!("http://test{path}"))
                        .body(http_body_util::Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        })
    };
    let poll = send("/poll/bob");
    let hold = send("/hold/h2");
    gateway.holding(1).await;
    gateway.waiters(2).await;
    let published = publish(
        &gateway,
        r#"{"items": [{"channel": "bob", "formats": {"http-response": {"body": "to bob"}}},
                      {"channel": "h2", "formats": {"http-response": {"body": "to h2"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK);
    let (status, body) = within("the poll", poll).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"to bob"[..]));
    let (status, body) = within("the hold", hold).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"to h2"[..]));
}

#[tokio::test]
async fn tls_offers_http2_by_alpn() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gateway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let (_upstream, gateway) = setup(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ])
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within("the TLS handshake", connector.connect(name, tcp))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get("https://localhost/headers")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["x-forwarded-proto"][0], "https");
    assert_eq!(seen["host"][0], "localhost");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_answers_held_requests_503_and_exits_0() {
    let (_upstream, gateway) = setup(&["--route", "/poll/{client}"]).await;
    let mut held = Conn::connect(gateway.addr).await;
    held.send("GET", "/hold/stop", &[]).await;
    let mut poll = Conn::connect(gateway.addr).await;
    poll.send("GET", "/poll/carol", &[]).await;
    gateway.holding(1).await;
    gateway.waiters(2).await;
    gateway.send_term();
    let held_reply = held.response(false).await;
    let poll_reply = poll.response(false).await;
    let status = gateway.exit().await;
    for reply in [&held_reply, &poll_reply] {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=5).contains(&retry));
    }
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn metrics_and_health() {
    let (_upstream, gateway) = setup(&[]).await;
    let health = get(gateway.publish, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "ok\n");
    let metrics = get(gateway.publish, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for name in [
        "longpoll_waiters",
        "longpoll_gateway_proxied_total",
        "longpoll_gateway_grip_holding",
        "longpoll_gateway_published_items_total",
    ] {
        assert!(
            metrics.text().contains(&format!("# TYPE {name} ")),
            "{name} missing"
        );
    }
    assert_eq!(
        get(gateway.publish, "/nothing").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        request(gateway.publish, "GET", "/publish/", &[])
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn settings_come_from_a_toml_file_and_the_environment() {
    let upstream = Upstream::start().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gateway-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        r#"listen = "127.0.0.1:0"
publish-listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:1"
route = ["/events/{user}"]
publish-token = "from-file"
"#,
    )
    .unwrap();
    let upstream_url = upstream.url();
    let gateway = Gateway::start_with(
        &["--config", file.to_str().unwrap()],
        &["--publish-token", "from-flag"],
        &[("LONGPOLL_GATEWAY_UPSTREAM", upstream_url.as_str())],
    )
    .await;
    // The environment's upstream wins over the file's.
    assert_eq!(get(gateway.addr, "/hello").await.text(), "hello");
    // The file's route is held.
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/events/dan", &[]).await;
    gateway.waiters(1).await;
    // The flag's token wins over the file's.
    let mut raw = Conn::connect(gateway.publish).await;
    raw.send_with_body(
        "POST",
        "/publish/dan",
        &[("authorization", "Bearer from-file")],
        b"x",
    )
    .await;
    assert_eq!(raw.response(false).await.status, StatusCode::UNAUTHORIZED);
    raw.send_with_body(
        "POST",
        "/publish/dan",
        &[("authorization", "Bearer from-flag")],
        b"for dan",
    )
    .await;
    assert_eq!(raw.response(false).await.status, StatusCode::ACCEPTED);
    assert_eq!(client.response(false).await.text(), "for dan");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_documents_every_flag() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_longpoll-gateway"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--upstream",
        "--publish-listen",
        "--publish-token",
        "--publish-key",
        "--sig-key",
        "--sig-iss",
        "--route",
        "--timeout",
        "--max-waiters",
        "--max-per-id",
        "--grip-timeout",
        "--grip-timeout-min",
        "--grip-timeout-max",
        "--upstream-timeout",
        "--connect-timeout",
        "--shutdown-grace",
        "--tls-cert",
        "--tls-key",
        "--log-format",
        "LONGPOLL_GATEWAY_UPSTREAM",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[tokio::test]
async fn two_gateways_on_one_redis_share_holds_and_polls() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-gw-{:016x}", fastrand::u64(..));
    let shared = [
        "--redis",
        url.as_str(),
        "--redis-prefix",
        prefix.as_str(),
        "--route",
        "/poll/{client}",
    ];
    let (upstream, a) = setup(&shared).await;
    let mut args = vec![
        "--sig-key",
        "sig-secret",
        "--sig-iss",
        "test-gateway",
        "--grip-timeout-min",
        "1",
    ];
    args.extend_from_slice(&shared);
    let b = Gateway::start(&upstream.url(), &args).await;

    // A GRIP hold on A, released by a publish through B.
    let mut held = Conn::connect(a.addr).await;
    held.send("GET", "/hold/news", &[]).await;
    a.holding(1).await;
    let published = publish(
        &b,
        r#"{"items": [{"channel": "news", "formats": {"http-response": {"code": 201, "body": "via b"}}}]}"#,
        &[],
    )
    .await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.text());
    let reply = held.response(false).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.text(), "via b");

    // A --route poll on B, released by a plain publish through A.
    let mut poll = Conn::connect(b.addr).await;
    poll.send("GET", "/poll/zed", &[]).await;
    b.waiters(1).await;
    let mut plain = Conn::connect(a.publish).await;
    plain
        .send_with_body("POST", "/publish/zed", &[], b"via a")
        .await;
    assert_eq!(plain.response(false).await.status, StatusCode::ACCEPTED);
    assert_eq!(poll.response(false).await.text(), "via a");
}

#[tokio::test]
async fn a_gateway_refuses_to_start_without_its_redis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_longpoll-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .args(["--redis", &format!("redis://127.0.0.1:{port}")])
        .output();
    let output = within("the gateway to give up", output).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to Redis at redis://127.0.0.1:"),
        "{stderr}"
    );
}
