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
    poll_then_publish_at(addr, addr, publish_path)
        .await
        .1
        .cursor()
}

/// Parks a poll on `addr`, publishes with `POST publish_path` on
/// `publish_addr`, and checks the event; the publish's answer and the
/// event.
async fn poll_then_publish_at(
    addr: SocketAddr,
    publish_addr: SocketAddr,
    publish_path: &str,
) -> (support::Reply, support::Reply) {
    let mut poll = Conn::connect(addr).await;
    poll.send("GET", "/poll/alice", &[]).await;
    // The poll parks server-side; a publish before that is kept and
    // delivered all the same, so no wait is needed for correctness.
    let mut publish = Conn::connect(publish_addr).await;
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
    (published, reply)
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
    // A kept-alive connection between two requests is asked to finish too:
    // the demo does not wait out its 10 s for connections still open.
    let mut idle = Conn::connect(addr).await;
    idle.send("GET", "/metrics", &[]).await;
    assert_eq!(idle.response(false).await.status, StatusCode::OK);
    let status = tokio::time::timeout(Duration::from_secs(5), example.terminate())
        .await
        .expect("the demo stops within 5 s with an idle kept-alive connection open");
    assert_eq!(status.code(), Some(0));
    assert!(idle.closed_by_server().await);
    for conn in &mut parked {
        let reply = conn.response(false).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.header("retry-after").is_some());
    }
}

/// A real upstream app in a process of its own: Python's `http.server`,
/// serving `dir` on a free loopback port; stopped by its PID.
async fn python_upstream(dir: &std::path::Path) -> (support::process::Process, SocketAddr) {
    use tokio::io::AsyncBufReadExt;

    let child = std::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs (scripts/test.sh needs it too)");
    let mut process = support::process::Process::new(child, "python3 -m http.server");
    let stdout = process.child_mut().stdout.take().unwrap();
    let stdout = tokio::process::ChildStdout::from_std(stdout).unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let line = within("the upstream to start", lines.next_line())
        .await
        .unwrap()
        .expect("http.server says where it serves");
    let addr = line
        .split("(http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (process, addr)
}

#[tokio::test]
async fn the_proxy_example_holds_polls_and_proxies_the_rest_to_a_real_upstream() {
    let dir = std::env::temp_dir().join(format!("longpoll-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from upstream\n").unwrap();
    let (upstream, upstream_addr) = python_upstream(&dir).await;

    let upstream_url = format!("http://{upstream_addr}");
    let (gateway, addrs) = Example::start_reading(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream_url,
        ],
        &["listening on ", "publishing on "],
    )
    .await;
    let (addr, publish_addr) = (addrs[0], addrs[1]);

    // Everything but the polls is the upstream's: its files, its 404s, its
    // answer to a POST, its Server header.
    let file = get(addr, "/hello.txt").await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.text(), "hello from upstream\n");
    assert!(
        file.header("server")
            .unwrap_or_default()
            .contains("SimpleHTTP"),
        "{:?}",
        file.headers
    );
    assert_eq!(get(addr, "/missing").await.status, StatusCode::NOT_FOUND);
    let mut post = Conn::connect(addr).await;
    post.send_with_body("POST", "/hello.txt", &[], b"x").await;
    assert_eq!(
        post.response(false).await.status,
        StatusCode::NOT_IMPLEMENTED,
        "http.server answers POST with 501"
    );

    // Polls are the gateway's: one parks, and a publish on the internal
    // address answers it.
    let (published, reply) = poll_then_publish_at(addr, publish_addr, "/publish/alice").await;
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.cursor(), published.cursor());
    assert!(
        reply.header("server").is_none(),
        "the upstream never saw it"
    );
    let keepalive = get(
        addr,
        &format!("/poll/alice?timeout=0&since={}", reply.cursor()),
    )
    .await;
    assert_eq!(keepalive.status, StatusCode::NO_CONTENT);
    assert_eq!(keepalive.cursor(), reply.cursor());
    // Publishing is not proxied, nor open on the public address.
    let mut public = Conn::connect(addr).await;
    public
        .send_with_body("POST", "/publish/alice", &[], b"forged")
        .await;
    assert_eq!(
        public.response(false).await.status,
        StatusCode::NOT_IMPLEMENTED,
        "the upstream's answer, not a publish"
    );

    assert_eq!(gateway.terminate().await.code(), Some(0));
    upstream.terminate().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn the_stack_example_polls_through_trace_cors_compression_auth_and_timeout() {
    let page = "http://page.example";
    let example = Example::start(
        "stack",
        &[
            "--user",
            "alice:alice-token",
            "--user",
            "bob:bob-token",
            "--allow-origin",
            page,
            "--timeout",
            "1",
        ],
    )
    .await;
    let addr = example.addr;
    let alice = [
        ("authorization", "Bearer alice-token"),
        ("origin", page),
        ("accept-encoding", "gzip"),
    ];

    // Bob sends alice a message; alice's poll gets it, gzipped, readable
    // from the page's origin.
    let text = "a message long enough to be worth compressing, twice: compress me";
    let mut publish = Conn::connect(addr).await;
    publish
        .send_with_body(
            "POST",
            "/publish/alice",
            &[
                ("authorization", "Bearer bob-token"),
                ("content-type", "application/json"),
            ],
            format!(r#"{{"text":"{text}"}}"#).as_bytes(),
        )
        .await;
    let published = publish.response(false).await;
    assert_eq!(
        published.status,
        StatusCode::ACCEPTED,
        "{}",
        published.text()
    );
    let event = support::request(addr, "GET", "/poll/alice", &alice).await;
    assert_eq!(
        event.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&event.body)
    );
    assert_eq!(event.header("content-type"), Some("application/json"));
    assert_eq!(event.header("content-encoding"), Some("gzip"));
    assert_eq!(event.header("access-control-allow-origin"), Some(page));
    assert!(
        event
            .header("access-control-expose-headers")
            .is_some_and(|exposed| exposed.contains("etag") && exposed.contains("longpoll-gap"))
    );
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&event.body[..]),
        &mut json,
    )
    .unwrap();
    let message: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(message["from"], "bob");
    assert_eq!(message["text"], text);
    let cursor = event.cursor();
    assert_eq!(format!("{cursor}\n"), published.text());

    // A poll outlives the app's 1 s timeout: the timeout layer is inside
    // the long-poll layer, so the poll ends with the keepalive, not 408.
    let started = std::time::Instant::now();
    let keepalive = support::request(
        addr,
        "GET",
        &format!("/poll/alice?timeout=1.6&since={cursor}"),
        &alice,
    )
    .await;
    assert_eq!(keepalive.status, StatusCode::NO_CONTENT);
    assert_eq!(keepalive.cursor(), cursor);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // The app's own slow route is cut by it.
    let slow = support::request(addr, "GET", "/slow", &alice).await;
    assert_eq!(slow.status, StatusCode::REQUEST_TIMEOUT);

    // Refusals: no token (401), another user's id (403); both readable by
    // the page (CORS is outside authentication). A preflight carries no
    // credentials and is answered all the same.
    let anonymous = support::request(addr, "GET", "/poll/alice", &[("origin", page)]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.header("access-control-allow-origin"), Some(page));
    let forged = support::request(addr, "GET", "/poll/bob", &alice).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(forged.header("access-control-allow-origin"), Some(page));
    let preflight = support::request(
        addr,
        "OPTIONS",
        "/poll/alice",
        &[
            ("origin", page),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(page));

    assert_eq!(example.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn the_demo_answers_cors_for_the_origins_it_is_given() {
    let example = Example::start(
        "demo",
        &[
            "--allow-origin",
            "http://page.example",
            "--allow-origin",
            "http://localhost:8080",
        ],
    )
    .await;
    let addr = example.addr;
    for origin in ["http://page.example", "http://localhost:8080"] {
        let preflight = support::request(
            addr,
            "OPTIONS",
            "/poll/alice",
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "last-event-id"),
            ],
        )
        .await;
        assert_eq!(preflight.status, StatusCode::OK, "{origin}");
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            Some(origin)
        );
        let poll =
            support::request(addr, "GET", "/poll/alice?timeout=0", &[("origin", origin)]).await;
        assert_eq!(poll.status, StatusCode::NO_CONTENT);
        assert_eq!(poll.header("access-control-allow-origin"), Some(origin));
        assert!(
            poll.header("access-control-expose-headers")
                .is_some_and(|exposed| exposed.contains("etag"))
        );
    }
    let stranger = support::request(
        addr,
        "GET",
        "/poll/alice?timeout=0",
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(stranger.status, StatusCode::NO_CONTENT);
    assert!(
        stranger
            .headers
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-")),
        "{:?}",
        stranger.headers
    );
    assert_eq!(example.terminate().await.code(), Some(0));

    // An origin that is not one is refused at start.
    let refused = std::process::Command::new(support::example::example_path("demo"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--allow-origin",
            "http://page.example/",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is not an origin"), "{said}");
}
