//! The long-poll layer among the layers of tower-http every axum app stacks,
//! in-process over real sockets: CORS (the demo's, outermost), compression
//! outside the layer (events and the delivery commit), and what `TraceLayer`
//! logs for keepalives and shutdown `503`s, as configured by default and as
//! the stack example configures it. (Timeouts: `tests/client.rs`.)

mod support;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo_app;

#[allow(dead_code)]
#[path = "../examples/stack/layers.rs"]
mod stack_layers;

use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use http::StatusCode;
use support::{Conn, Reply, TestServer, eventually, request};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use tower_longpoll::{Event, Hub};

const PAGE: &str = "http://page.example:8080";

async fn demo(options: demo_app::Options) -> TestServer {
    let hub = Hub::new();
    TestServer::serve(demo_app::router(hub.clone(), &options), hub).await
}

fn allowing(origins: &[&str]) -> demo_app::Options {
    demo_app::Options {
        allow_origins: origins
            .iter()
            .map(|origin| demo_app::parse_origin(origin).unwrap())
            .collect(),
        ..demo_app::Options::default()
    }
}

/// The `Access-Control-*` headers of a reply.
fn cors_headers(reply: &Reply) -> Vec<String> {
    let mut names: Vec<String> = reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect();
    names.sort();
    names
}

async fn preflight(server: &TestServer, origin: &str) -> Reply {
    request(
        server.addr,
        "OPTIONS",
        "/poll/alice",
        &[
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "last-event-id"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_preflight_for_an_allowed_origin_is_answered_before_the_layer() {
    let server = demo(allowing(&[PAGE])).await;
    let reply = preflight(&server, PAGE).await;
    // Without CORS outside it, the long-poll layer answers OPTIONS with 405.
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("access-control-allow-origin"), Some(PAGE));
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    let methods = reply.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{methods}"
    );
    let headers = reply.header("access-control-allow-headers").unwrap();
    for name in ["last-event-id", "if-none-match", "authorization"] {
        assert!(headers.contains(name), "{name} not in {headers}");
    }
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert_eq!(server.hub.stats().rejected, 0, "the layer never saw it");
}

#[tokio::test]
async fn answers_to_an_allowed_origin_expose_what_a_client_reads() {
    let server = demo(allowing(&[PAGE, "http://other.example"])).await;
    let cursor = server
        .hub
        .publish("alice", Event::new("hi").content_type("text/plain"))
        .await
        .unwrap();
    let event = request(server.addr, "GET", "/poll/alice", &[("origin", PAGE)]).await;
    assert_eq!(event.status, StatusCode::OK);
    assert_eq!(event.cursor(), cursor.to_string());
    assert_eq!(event.header("access-control-allow-origin"), Some(PAGE));
    assert_eq!(
        event.header("access-control-allow-credentials"),
        Some("true")
    );
    let exposed = event.header("access-control-expose-headers").unwrap();
    for name in ["etag", "longpoll-gap", "retry-after"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    // A refusal carries them too, so that a page can read its Retry-After.
    server.hub.shutdown();
    let refused = request(server.addr, "GET", "/poll/alice", &[("origin", PAGE)]).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("access-control-allow-origin"), Some(PAGE));
}

#[tokio::test]
async fn other_origins_and_requests_without_one_get_no_cors_headers() {
    let server = demo(allowing(&[PAGE])).await;
    server.hub.publish("alice", Event::new("hi")).await.unwrap();
    let stranger = "http://evil.example";
    let reply = request(
        server.addr,
        "GET",
        "/poll/alice?timeout=0",
        &[("origin", stranger)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
    let reply = preflight(&server, stranger).await;
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
    let plain = request(server.addr, "GET", "/poll/alice?timeout=0", &[]).await;
    assert_eq!(cors_headers(&plain), Vec::<String>::new());
    // Without --allow-origin, no CORS at all: the layer refuses OPTIONS.
    let closed = demo(demo_app::Options::default()).await;
    let reply = preflight(&closed, PAGE).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(cors_headers(&reply), Vec::<String>::new());
}

#[tokio::test]
async fn any_origin_gets_a_star_and_no_credentials() {
    let server = demo(allowing(&["*"])).await;
    let reply = request(
        server.addr,
        "GET",
        "/poll/alice?timeout=0",
        &[("origin", "http://anyone.example")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("access-control-allow-credentials"), None);
    assert!(reply.header("access-control-expose-headers").is_some());
}

#[test]
fn origins_are_checked_when_given() {
    for good in ["*", "http://localhost:3000", "https://app.example.com"] {
        assert!(demo_app::parse_origin(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "localhost:3000",
        "http://app.example/",
        "http://app.example/path",
        "http://",
        "http:// spaced",
    ] {
        assert!(demo_app::parse_origin(bad).is_err(), "{bad:?} was accepted");
    }
}

/// The demo's app with tower-http's compression outside the long-poll layer.
async fn compressed_demo() -> TestServer {
    let hub = Hub::new();
    let router: Router =
        demo_app::router(hub.clone(), &demo_app::Options::default()).layer(CompressionLayer::new());
    TestServer::serve(router, hub).await
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[tokio::test]
async fn compression_outside_the_layer_compresses_events_and_commits_as_it_reads() {
    let server = compressed_demo().await;
    let json = format!(r#"{{"items":[{}]}}"#, vec!["\"same\""; 40].join(","));
    let cursor = server
        .hub
        .publish(
            "alice",
            Event::new(json.clone()).content_type("application/json"),
        )
        .await
        .unwrap();
    let gzip = [("accept-encoding", "gzip")];

    // A client without a cursor: the event, gzipped, its headers kept.
    let event = request(server.addr, "GET", "/poll/alice", &gzip).await;
    assert_eq!(event.status, StatusCode::OK);
    assert_eq!(event.header("content-encoding"), Some("gzip"));
    assert_eq!(event.header("content-length"), None);
    assert_eq!(event.header("vary"), Some("accept-encoding"));
    assert_eq!(event.header("content-type"), Some("application/json"));
    assert_eq!(event.header("cache-control"), Some("no-store"));
    assert_eq!(event.cursor(), cursor.to_string(), "the ETag is untouched");
    assert!(event.body.len() < json.len());
    assert_eq!(gunzip(&event.body), json.as_bytes());
    // The compressor read the event's body: the delivery is committed, so
    // the next cursor-less poll is past it.
    let hub = server.hub.clone();
    eventually("the delivery", || hub.stats().delivered == 1).await;
    let next = request(server.addr, "GET", "/poll/alice?timeout=0", &gzip).await;
    assert_eq!(next.status, StatusCode::NO_CONTENT);
    assert_eq!(next.cursor(), cursor.to_string());
    assert_eq!(
        next.header("content-encoding"),
        None,
        "a keepalive has no body"
    );

    // A client that does not ask for gzip gets the bytes as they are.
    let plain = request(
        server.addr,
        "GET",
        "/poll/alice?since=0000000000000000-0",
        &[],
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.text(), json);

    // Small events (under 32 bytes) go as they are, and so does an empty
    // event (its size is exactly 0), committed as its response is handed
    // over.
    let small = server.hub.publish("bob", Event::new("tiny")).await.unwrap();
    let empty = server.hub.publish("bob", Event::new("")).await.unwrap();
    let reply = request(server.addr, "GET", "/poll/bob", &gzip).await;
    assert_eq!(reply.cursor(), small.to_string());
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.text(), "tiny");
    let reply = request(server.addr, "GET", "/poll/bob", &gzip).await;
    assert_eq!(reply.cursor(), empty.to_string());
    assert_eq!(reply.header("content-encoding"), None);
    assert!(reply.body.is_empty());
    // Four event responses handed over: the gzipped one, the plain one, the
    // small one and the empty one.
    eventually("the empty event's delivery", || hub.stats().delivered == 4).await;
}

/// One tracing event, as the test's subscriber saw it.
#[derive(Debug, Clone)]
struct Logged {
    level: tracing::Level,
    text: String,
}

/// A subscriber that keeps every event, with its fields as text.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Logged>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            text: fields.0,
        });
    }
}

impl Collect {
    fn find(&self, what: impl Fn(&Logged) -> bool) -> Vec<Logged> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| what(e))
            .cloned()
            .collect()
    }
}

/// Serves the demo's app behind `trace` (outermost), on a thread-local
/// subscriber that collects events; answers one keepalive after about
/// 200 ms and one shutdown `503`, and returns what was logged.
async fn traced<L>(trace: L) -> Collect
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Response:
        axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;

    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry().with(collect.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let hub = Hub::new();
    let router = demo_app::router(hub.clone(), &demo_app::Options::default()).layer(trace);
    let server = TestServer::serve(router, hub).await;

    let keepalive = request(server.addr, "GET", "/poll/alice?timeout=0.2", &[]).await;
    assert_eq!(keepalive.status, StatusCode::NO_CONTENT);
    let mut parked = Conn::connect(server.addr).await;
    parked.send("GET", "/poll/bob", &[]).await;
    server.parked(1).await;
    server.hub.shutdown();
    let shed = parked.response(false).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    server.stop().await.unwrap();
    collect
}

/// The milliseconds of `field=… ms` in a logged text.
fn millis(text: &str, field: &str) -> u64 {
    let at = text
        .find(&format!("{field}="))
        .unwrap_or_else(|| panic!("no {field} in {text}"));
    text[at + field.len() + 1..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// Both run on current-thread runtimes: the server's tasks run on the test's
// thread, where its subscriber is the default.

#[tokio::test]
async fn trace_layer_by_default_logs_the_wait_as_latency_and_a_shutdown_as_an_error() {
    let logged = traced(TraceLayer::new_for_http()).await;
    let errors = logged.find(|e| e.level == tracing::Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].text.contains("503"), "{errors:?}");
    let finished =
        logged.find(|e| e.text.contains("finished processing request") && e.text.contains("204"));
    assert_eq!(finished.len(), 1, "{:?}", logged.find(|_| true));
    assert!(millis(&finished[0].text, "latency") >= 150, "{finished:?}");
}

#[tokio::test]
async fn the_stacks_trace_layer_logs_keepalives_as_waits_and_shutdowns_without_errors() {
    let logged = traced(stack_layers::trace()).await;
    let loud = logged.find(|e| e.level <= tracing::Level::WARN);
    assert!(loud.is_empty(), "{loud:?}");
    let keepalives = logged.find(|e| e.text.contains("long-poll keepalive"));
    assert_eq!(keepalives.len(), 1, "{:?}", logged.find(|_| true));
    assert_eq!(keepalives[0].level, tracing::Level::DEBUG);
    assert!(
        millis(&keepalives[0].text, "waited_ms") >= 150,
        "{keepalives:?}"
    );
    let shed = logged.find(|e| e.text.contains("retry later"));
    assert_eq!(shed.len(), 1, "{:?}", logged.find(|_| true));
    assert_eq!(shed[0].level, tracing::Level::DEBUG, "{shed:?}");
    assert!(shed[0].text.contains("503"), "{shed:?}");
}
