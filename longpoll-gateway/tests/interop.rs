//! Interop with GRIP libraries nobody here wrote, run against the real
//! gateway binary: a Python backend using the PyPI package `gripcontrol`
//! (tests/interop/grip_backend.py) checks our Grip-Sig, asks for holds and
//! streams with its header and JSON helpers, and publishes with its
//! `GripPubControl`; and a Django app serving Server-Sent Events with
//! `django-eventstream` (tests/interop/django_events.py).
//!
//! `scripts/test.sh` installs the packages; when the running `python3`
//! cannot import them, the test makes a venv under `target/` and installs
//! them there (`tests/support/python.rs`).

mod support;

use http::StatusCode;
use support::python::{Backend, gateway_args};
use support::streams::{Ending, Streamed};
use support::{Conn, Gateway, get};

/// Asks the backend to publish through gripcontrol to the gateway.
async fn backend_publishes(backend: &Backend, gateway: &Gateway, path: &str, body: &str) {
    let control = format!("http://{}", gateway.publish);
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut conn = Conn::connect(backend.addr).await;
    conn.send_with_body(
        "POST",
        &format!("{path}{separator}control={control}"),
        &[],
        body.as_bytes(),
    )
    .await;
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn a_gripcontrol_backend_holds_and_publishes_through_the_gateway() {
    let backend = Backend::gripcontrol().await;
    let gateway = Gateway::start(&backend.url, &gateway_args()).await;

    // gripcontrol's validate_sig accepts our Grip-Sig, and only ours.
    assert_eq!(get(gateway.addr, "/sig").await.text(), "valid");
    assert_eq!(get(backend.addr, "/sig").await.text(), "invalid");

    // A hold from create_grip_channel_header, released by GripPubControl
    // (a JWT-authenticated EPCP publish with the format on the item).
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/headers-hold/py-news", &[]).await;
    gateway.holding(1).await;
    backend_publishes(&backend, &gateway, "/publish/py-news", "hello from python").await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello from python");
    assert_eq!(reply.header("x-from"), Some("gripcontrol"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert!(
        reply
            .headers
            .keys()
            .all(|name| !name.as_str().starts_with("grip-"))
    );

    // A hold from create_hold_response: its response on timeout.
    let reply = get(gateway.addr, "/json-hold/py-quiet?timeout=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "timed out");
    assert_eq!(reply.header("x-backend"), Some("py"));

    // The same, released by a binary publish (body-bin).
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/json-hold/py-bin", &[]).await;
    gateway.holding(1).await;
    backend_publishes(&backend, &gateway, "/publish-bin/py-bin", "").await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"\x00\x01\xff");

    assert_eq!(
        gateway
            .metric("longpoll_gateway_publish_unauthorized_total")
            .await,
        0
    );
    assert_eq!(
        gateway
            .metric("longpoll_gateway_published_items_total")
            .await,
        2
    );
}

#[tokio::test]
async fn a_gripcontrol_stream_is_kept_alive_fed_resumed_and_closed_through_the_gateway() {
    let backend = Backend::gripcontrol().await;
    let gateway = Gateway::start(&backend.url, &gateway_args()).await;

    // create_hold_stream, with a Grip-Keep-Alive of a second.
    let mut stream = Streamed::open(gateway.addr, "/stream-hold/py-stream?keep=1", &[]).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.header("content-type"), Some("text/plain"));
    assert!(
        stream
            .headers
            .keys()
            .all(|n| !n.as_str().starts_with("grip-"))
    );
    assert_eq!(stream.until("stream open\n").await, "stream open\n");
    assert_eq!(stream.until("keep-alive\n").await, "keep-alive\n");

    // GripPubControl.publish_http_stream, with ids.
    let path = "/publish-stream/py-stream?id=1";
    backend_publishes(&backend, &gateway, path, "one from python\n").await;
    assert_eq!(stream.until("python\n").await, "one from python\n");
    drop(stream);

    // Published while the client is away; it comes back with the id it
    // had as prev-id (gripcontrol's Channel(prev_id=...)).
    let path = "/publish-stream/py-stream?id=2&prev=1";
    backend_publishes(&backend, &gateway, path, "two\n").await;
    let path = "/publish-stream/py-stream?id=3&prev=2";
    backend_publishes(&backend, &gateway, path, "three\n").await;
    let mut back = Streamed::open(gateway.addr, "/stream-hold/py-stream?last=1", &[]).await;
    assert_eq!(back.until("three\n").await, "stream open\ntwo\nthree\n");

    // HttpStreamFormat(close=True) ends the stream cleanly.
    backend_publishes(&backend, &gateway, "/publish-close/py-stream", "").await;
    let (rest, ending) = back.end().await;
    assert_eq!(ending, Ending::Clean);
    assert!(rest.chars().all(|c| "keep-alive\n".contains(c)), "{rest:?}");
    assert_eq!(
        gateway
            .metric("longpoll_gateway_publish_unauthorized_total")
            .await,
        0
    );
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq, Eq)]
struct Sse {
    event: String,
    id: String,
    data: String,
}

/// The next event of the stream, comment blocks and keep-alives skipped.
async fn next_event(stream: &mut Streamed) -> Sse {
    loop {
        let block = stream.until("\n\n").await;
        let mut event = Sse {
            event: "message".into(),
            id: String::new(),
            data: String::new(),
        };
        let mut fields = 0;
        for line in block.lines() {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "event" => event.event = value.into(),
                    "id" => event.id = value.into(),
                    "data" => event.data = value.into(),
                    _ => continue,
                }
                fields += 1;
            }
        }
        if fields > 0 && event.event != "keep-alive" {
            return event;
        }
    }
}

fn message(n: u32) -> Sse {
    Sse {
        event: "message".into(),
        id: format!("test:{n}"),
        data: format!("{{\"n\": {n}}}"),
    }
}

async fn send(gateway: &Gateway, n: u32) {
    let reply = get(gateway.addr, &format!("/send?n={n}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn django_eventstream_streams_and_resumes_with_last_event_id_through_the_gateway() {
    let (_app, gateway) = Backend::django_behind_a_gateway().await;

    let mut stream = Streamed::open(gateway.addr, "/events/", &[]).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert!(
        stream
            .headers
            .keys()
            .all(|n| !n.as_str().starts_with("grip-"))
    );
    assert_eq!(next_event(&mut stream).await.event, "stream-open");
    // send_event publishes through the gateway (http-stream, build-id and
    // skip-users filters, prev-id): each event has its id.
    send(&gateway, 1).await;
    send(&gateway, 2).await;
    assert_eq!(next_event(&mut stream).await, message(1));
    assert_eq!(next_event(&mut stream).await, message(2));

    // The client goes away and misses three events.
    drop(stream);
    gateway
        .metric_is("longpoll_gateway_grip_stream_gone_total", 1)
        .await;
    for n in 3..=5 {
        send(&gateway, n).await;
    }
    let mut back = Streamed::open(gateway.addr, "/events/", &[("last-event-id", "test:2")]).await;
    assert_eq!(next_event(&mut back).await.event, "stream-open");
    for n in 3..=5 {
        assert_eq!(next_event(&mut back).await, message(n));
    }
    // Exactly those three: the next one is the next event sent.
    send(&gateway, 6).await;
    assert_eq!(next_event(&mut back).await, message(6));
    assert_eq!(
        gateway
            .metric("longpoll_gateway_grip_stream_filtered_total")
            .await,
        0
    );
}
