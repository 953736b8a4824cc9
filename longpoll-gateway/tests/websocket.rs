//! WebSocket-over-HTTP: the gateway ends clients' WebSockets and speaks
//! `application/websocket-events` to a backend written with the PyPI
//! package `gripcontrol` (`WebSocketContext`, tests/interop/ws_backend.py),
//! the client a tokio-tungstenite one: echo with `Meta-*` kept from
//! `Set-Meta-*`, `c:` subscribe and `ws-message` publishes (from the backend
//! through `GripPubControl` and from the publish API), close codes both
//! ways, and the same through a routes file's `over_http` target; a Django
//! view with django-grip's `request.wscontext` too.

mod support;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::python::{Backend, PUBLISH_TOKEN, gateway_args};
use support::{Conn, Gateway, within};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn ws_backend() -> Backend {
    use support::python::{PUBLISH_ISS, PUBLISH_KEY, SIG_ISS, SIG_KEY};
    Backend::start(
        "ws_backend.py",
        &[SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY],
    )
    .await
}

async fn connect(gateway: &Gateway, path: &str) -> Client {
    let url = format!("ws://{}{path}", gateway.addr);
    let (client, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("the gateway accepts the WebSocket");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "the grip extension is between the gateway and the backend"
    );
    client
}

/// The next message that is not a ping or pong.
async fn next(client: &mut Client) -> Message {
    loop {
        let message = within("a WebSocket message", client.next())
            .await
            .expect("the socket is open")
            .expect("a message");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

async fn next_text(client: &mut Client) -> String {
    match next(client).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn publish(gateway: &Gateway, json: &str) {
    let mut conn = Conn::connect(gateway.publish).await;
    let bearer = format!("Bearer {PUBLISH_TOKEN}");
    conn.send_with_body(
        "POST",
        "/publish/",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        json.as_bytes(),
    )
    .await;
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

async fn echo_publish_and_close(gateway: &Gateway) {
    let control = format!("http://{}", gateway.publish);
    let mut client = connect(gateway, &format!("/chat?control={control}")).await;
    gateway.metric_is("longpoll_gateway_websockets", 1).await;

    // The backend's `m:` prefix is taken off; Set-Meta-User came back as
    // Meta-User; one Connection-Id for the socket.
    client.send(Message::text("hi")).await.unwrap();
    let first = next_text(&mut client).await;
    assert!(first.starts_with("echo:hi user=alice id=lg-"), "{first}");
    client.send(Message::text("again")).await.unwrap();
    let second = next_text(&mut client).await;
    let id = |reply: &str| reply.rsplit_once("id=").unwrap().1.to_owned();
    assert_eq!(id(&first), id(&second));

    // The socket subscribed to `room` with a c: message: publishes reach
    // it, from gripcontrol's GripPubControl and from the publish API.
    client
        .send(Message::text("publish:from python"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await, "from python");
    publish(
        gateway,
        r#"{"items": [{"channel": "room", "formats": {"ws-message": {"content-bin": "AAH/"}}}]}"#,
    )
    .await;
    assert_eq!(next(&mut client).await, Message::binary(vec![0u8, 1, 255]));

    // The backend closes with its code.
    client.send(Message::text("close")).await.unwrap();
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected a close, got {other:?}"),
    }
    drop(client);
    gateway.metric_is("longpoll_gateway_websockets", 0).await;
}

#[tokio::test]
async fn a_gripcontrol_backend_speaks_websocket_over_http_behind_over_http() {
    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;
    echo_publish_and_close(&gateway).await;
}

#[tokio::test]
async fn a_routes_file_target_with_over_http_does_the_same() {
    let backend = ws_backend().await;
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ws.routes");
    std::fs::write(
        &path,
        // The first target is down: skipped for the second.
        format!(
            "*,proto=ws 127.0.0.1:{},over_http {},over_http\n* 127.0.0.1:1\n",
            dead_port(),
            backend.addr
        ),
    )
    .unwrap();
    let gateway = Gateway::start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--routes",
            path.to_str().unwrap(),
        ],
        &gateway_args(),
        &[],
    )
    .await;
    echo_publish_and_close(&gateway).await;
}

#[tokio::test]
async fn a_client_close_reaches_the_backend_and_a_publish_can_close_the_socket() {
    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;

    let mut client = connect(&gateway, "/chat").await;
    client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "".into(),
        })))
        .await
        .unwrap();
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected a close, got {other:?}"),
    }

    let mut client = connect(&gateway, "/chat").await;
    client.send(Message::text("hi")).await.unwrap();
    next_text(&mut client).await;
    publish(
        &gateway,
        r#"{"items": [{"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4002}}}]}"#,
    )
    .await;
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_socket_the_backend_refuses_is_not_upgraded() {
    let backend = ws_backend().await;
    // Signed with another key: the backend answers OPEN with 403, which
    // the client gets.
    let gateway = Gateway::start(
        &backend.url,
        &[
            "--over-http",
            "--sig-key",
            "wrong-key-of-enough-length-000000",
        ],
    )
    .await;
    let url = format!("ws://{}/chat", gateway.addr);
    let refused = within("the handshake", tokio_tungstenite::connect_async(url)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_eq!(response.body().as_deref(), Some(&b"not proxied"[..]));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn two_gateways_on_one_redis_reach_each_others_sockets() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-gw-ws-{:016x}", fastrand::u64(..));
    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.extend_from_slice(&["--over-http", "--redis", &url, "--redis-prefix", &prefix]);
    let a = Gateway::start(&backend.url, &args).await;
    let b = Gateway::start(&backend.url, &args).await;

    let mut on_a = connect(&a, "/chat").await;
    let mut on_b = connect(&b, "/chat").await;
    // A round trip each: both sockets are subscribed to `room` by now.
    on_a.send(Message::text("hi")).await.unwrap();
    next_text(&mut on_a).await;
    on_b.send(Message::text("hi")).await.unwrap();
    next_text(&mut on_b).await;

    publish(
        &b,
        r#"{"items": [{"channel": "room", "formats": {"ws-message": {"content": "to all"}}}]}"#,
    )
    .await;
    assert_eq!(next_text(&mut on_a).await, "to all");
    assert_eq!(next_text(&mut on_b).await, "to all");
}

/// A backend that subscribes a socket and says so in the same answer: a
/// publish made as soon as the client reads that reaches the socket, even
/// when the channel's reader on this gateway has only just started (each
/// round the socket is the channel's only one, so its reader starts anew).
#[tokio::test]
async fn a_publish_right_after_the_subscribe_is_not_lost() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-gw-ws-{:016x}", fastrand::u64(..));
    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.extend_from_slice(&["--over-http", "--redis", &url, "--redis-prefix", &prefix]);
    let gateway = Gateway::start(&backend.url, &args).await;
    for round in 0..20 {
        let mut client = connect(&gateway, "/chat?greet=1").await;
        assert_eq!(next_text(&mut client).await, "subscribed");
        publish(
            &gateway,
            &format!(
                r#"{{"items": [{{"channel": "room", "formats": {{"ws-message": {{"content": "round {round}"}}}}}}]}}"#
            ),
        )
        .await;
        assert_eq!(next_text(&mut client).await, format!("round {round}"));
        drop(client);
        gateway.metric_is("longpoll_gateway_websockets", 0).await;
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;
    let mut client = connect(&gateway, "/chat").await;
    client.send(Message::text("hi")).await.unwrap();
    next_text(&mut client).await;
    gateway.send_term();
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(gateway.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_django_grip_view_speaks_websocket_over_http() {
    let (_app, gateway) = Backend::django_behind_a_gateway_with(&["--over-http"]).await;
    let mut client = connect(&gateway, "/ws/").await;
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "django:hello");
    // django_grip.publish, through GRIP_PROXIES, to the gateway.
    client.send(Message::text("publish")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "from django");
    client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await
        .unwrap();
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn keep_alives_both_ways_and_the_message_size_limit() {
    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;

    // Keep-Alive-Interval: the gateway POSTs on its own, and the backend's
    // answer reaches the client.
    let mut client = connect(&gateway, "/chat").await;
    client.send(Message::text("interval")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "tick");

    // A keep-alive control message: its content, every second.
    let mut client = connect(&gateway, "/chat").await;
    client.send(Message::text("keep-alive")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "still here");
    assert_eq!(next_text(&mut client).await, "still here");

    // Over 1 MiB: closed with 1009.
    let mut client = connect(&gateway, "/chat").await;
    let big = "x".repeat(1024 * 1024 + 1);
    let _ = client.send(Message::text(big)).await;
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_python_websockets_client_speaks_through_the_gateway() {
    use tokio::io::AsyncBufReadExt;

    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ws_client.py");
    let mut client = tokio::process::Command::new(support::python::python())
        .arg(script)
        .arg(format!("ws://{}/chat", gateway.addr))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let line = within("the client's echo", lines.next_line())
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some("subscribed"));
    publish(
        &gateway,
        r#"{"items": [{"channel": "room", "formats": {"ws-message": {"content": "to python"}}}]}"#,
    )
    .await;
    let line = within("the client to finish", lines.next_line())
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some("ok"));
    assert!(
        within("the client to exit", client.wait())
            .await
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn a_websocket_over_http2_with_extended_connect() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let backend = ws_backend().await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;

    // h2c with prior knowledge.
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    // An ordinary request first: the server's SETTINGS (with
    // ENABLE_CONNECT_PROTOCOL) have come by its answer.
    let plain = http::Request::get(format!("http://{}/nothing", gateway.addr))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    within("a plain answer", sender.send_request(plain))
        .await
        .unwrap();

    let mut connect = http::Request::connect(format!("http://{}/chat", gateway.addr))
        .header("sec-websocket-version", "13")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = within("the CONNECT answer", sender.send_request(connect))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = within("the stream", hyper::upgrade::on(&mut response))
        .await
        .unwrap();
    let mut client =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    client.send(Message::text("over h2")).await.unwrap();
    let echo = within("the echo", client.next()).await.unwrap().unwrap();
    assert!(
        echo.to_text()
            .unwrap()
            .starts_with("echo:over h2 user=alice"),
        "{echo:?}"
    );
}
