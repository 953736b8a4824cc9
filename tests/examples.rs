//! Each example runs: the real binaries (built by `cargo test`), started on
//! a free port, driven over sockets, stopped with SIGTERM by their PID.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::example::Example;
use support::metrics::{eventually_metric, metric};
use support::{Conn, get, within};

/// Parks a poll, publishes with `POST publish_path`, and checks the event.
async fn poll_then_publish(addr: SocketAddr, publish_path: &str) -> String {
    let mut poll = Conn::connect(addr).await;
    poll.send("GET", "/poll/alice", &[]).await;
    // The poll parks server-side; a publish before that is kept and
    // delivered all the same, so no wait is needed for correctness.
    let mut publish = Conn::connect(addr).await;
    publish
        .send_with_body(
            "POST",
            publish_path,
            &[("content-type", "text/plain")],
            b"hello alice",
        )
        .await;
    let published = publish.response(false).await;
    assert_eq!(
        published.status,
        StatusCode::ACCEPTED,
        "{}",
        published.text()
    );
    let reply = poll.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello alice");
    reply.cursor()
}

#[tokio::test]
async fn the_axum_example_serves_polls_and_stops_on_sigterm() {
    let example = Example::start("axum", &[]).await;
    let cursor = poll_then_publish(example.addr, "/send/alice").await;
    assert!(cursor.ends_with("-1"));
    assert_eq!(get(example.addr, "/").await.status, StatusCode::OK);
    let status = example.terminate().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_hyper_example_serves_polls_and_stops_on_sigterm() {
    let example = Example::start("hyper", &[]).await;
    poll_then_publish(example.addr, "/send/alice").await;
    let index = get(example.addr, "/anything").await;
    assert!(index.text().contains("POST /send/{client}"));
    let status = example.terminate().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_tonic_example_serves_grpc_and_polls_side_by_side() {
    let example = Example::start("tonic", &[]).await;
    let addr = example.addr;

    // A long-poll over HTTP/1.1 gets the next tick.
    let tick = get(addr, "/poll/ticks").await;
    assert_eq!(tick.status, StatusCode::OK);
    assert!(tick.text().starts_with("tick "), "{}", tick.text());

    // The same over HTTP/2 (h2c), resuming from the cursor.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/poll/ticks?since={}", tick.cursor()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("an HTTP/2 poll", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"tick "));
    assert_ne!(body, tick.body, "the next tick, after the cursor");

    // gRPC calls are untouched by the layer.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "longpoll.demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    assert_eq!(example.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn the_demo_publishes_polls_measures_and_shuts_down() {
    let example = Example::start("demo", &["--timeout", "1", "--max-per-id", "100"]).await;
    let addr = example.addr;

    let page = get(addr, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains("tower-longpoll demo"));

    // A parked poll answered by a publish, content type kept.
    let mut poll = Conn::connect(addr).await;
    poll.send("GET", "/poll/alice", &[]).await;
    eventually_metric(addr, "longpoll_waiters", 1).await;
    let mut publish = Conn::connect(addr).await;
    publish
        .send_with_body(
            "POST",
            "/publish/alice",
            &[("content-type", "application/json")],
            br#"{"hello":"alice"}"#,
        )
        .await;
    let published = publish.response(false).await;
    assert_eq!(published.status, StatusCode::ACCEPTED);
    assert_eq!(published.header("content-type"), Some("application/json"));
    let cursor = published.cursor();
    assert_eq!(published.text(), format!("{{\"cursor\":\"{cursor}\"}}\n"));
    let event = poll.response(false).await;
    assert_eq!(event.status, StatusCode::OK);
    assert_eq!(event.text(), r#"{"hello":"alice"}"#);
    assert_eq!(event.header("content-type"), Some("application/json"));
    assert_eq!(event.cursor(), cursor);

    // Bad publishes.
    let mut big = Conn::connect(addr).await;
    big.send_with_body("POST", "/publish/alice", &[], &vec![b'x'; 1024 * 1024 + 1])
        .await;
    assert_eq!(
        big.response(false).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let mut bad_id = Conn::connect(addr).await;
    bad_id
        .send_with_body("POST", "/publish/%00", &[], b"x")
        .await;
    let refused = bad_id.response(false).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("control character"));

    // The keepalive after --timeout 1 (± 10 %).
    let started = std::time::Instant::now();
    let keepalive = get(addr, "/poll/bob").await;
    assert_eq!(keepalive.status, StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= Duration::from_millis(900));

    let metrics = get(addr, "/metrics").await;
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    assert!(text.contains("# TYPE longpoll_waiters gauge"));
    assert!(text.contains("# TYPE longpoll_deliveries_total counter"));
    assert_eq!(metric(text, "longpoll_waiters"), 0);
    assert_eq!(metric(text, "longpoll_events_published_total"), 1);
    assert_eq!(metric(text, "longpoll_deliveries_total"), 1);
    assert_eq!(metric(text, "longpoll_timeouts_total"), 1);
    assert_eq!(metric(text, "longpoll_cancellations_total"), 0);

    // SIGTERM: parked polls are answered 503 with Retry-After, exit code 0.
    let mut parked = Vec::new();
    for n in 0..10 {
        let mut conn = Conn::connect(addr).await;
        conn.send("GET", &format!("/poll/p{n}?timeout=30"), &[])
            .await;
        parked.push(conn);
    }
    eventually_metric(addr, "longpoll_waiters", 10).await;
    let status = example.terminate().await;
    assert_eq!(status.code(), Some(0));
    for conn in &mut parked {
        let reply = conn.response(false).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.header("retry-after").is_some());
    }
}
