//! The Redis store against a real Redis: several nodes sharing one stream of
//! events per id, and Redis going away and coming back.
//!
//! Uses the server at `REDIS_URL` (default `redis://127.0.0.1:6379`); the
//! fault test starts a private `redis-server` it can stop and restart.

#![cfg(feature = "redis")]

mod support;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::example::{Example, example_path};
use support::metrics::eventually_metric;
use support::{Conn, PATIENCE, TestServer, eventually, get, within};
use tower_longpoll::store::{RedisStore, Store, StoreError};
use tower_longpoll::{Cursor, Event, Hub, LongPollLayer, PublishError};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Keys of one test never meet another test's.
fn unique_prefix() -> String {
    format!("lp-test-{:016x}", fastrand::u64(..))
}

async fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .unwrap_or_else(|err| {
            panic!("{err} (set REDIS_URL, or run scripts/test.sh, which starts one)")
        })
}

/// One node: a hub on the shared Redis and a server with the layer.
struct Node {
    server: TestServer,
    store: RedisStore,
}

impl Node {
    async fn start(url: &str, prefix: &str, timeout: Duration) -> Node {
        let store = store(url, prefix).await;
        let hub = Hub::builder().store(store.clone()).build();
        let layer = LongPollLayer::builder(hub)
            .route("/poll/{client}")
            .timeout(timeout)
            .jitter(0.0)
            .build();
        Node {
            server: TestServer::start(layer).await,
            store,
        }
    }

    fn hub(&self) -> &Hub {
        &self.server.hub
    }
}

#[tokio::test]
async fn a_cursor_from_one_node_is_understood_by_another() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let a = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let b = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let c1 = b.hub().publish("amy", Event::new("one")).await.unwrap();
    let c2 = b
        .hub()
        .publish("amy", Event::new("two").content_type("text/plain"))
        .await
        .unwrap();
    assert_eq!(c1.epoch(), c2.epoch());
    assert_eq!((c1.seq(), c2.seq()), (1, 2));

    let reply = get(a.server.addr, &format!("/poll/amy?since={c1}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "two");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.cursor(), c2.to_string());
    // That delivery moved the id's shared position: a client without a
    // cursor, on the other node, is caught up.
    let caught_up = get(b.server.addr, "/poll/amy?timeout=0").await;
    assert_eq!(caught_up.status, StatusCode::NO_CONTENT);
    assert_eq!(caught_up.cursor(), c2.to_string());
}

#[tokio::test]
async fn a_poll_on_node_a_is_answered_by_a_publish_on_node_b_within_50_ms() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let a = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let b = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let mut latencies = Vec::new();
    let mut cursor = String::new();
    for round in 0..5 {
        let mut conn = Conn::connect(a.server.addr).await;
        conn.send("GET", &format!("/poll/ben?since={cursor}"), &[])
            .await;
        a.server.parked(1).await;
        eventually("node A subscribed to ben", || a.store.subscribed_ids() == 1).await;
        let started = Instant::now();
        b.hub()
            .publish("ben", Event::new(format!("round {round}")))
            .await
            .unwrap();
        let reply = conn.response(false).await;
        latencies.push(started.elapsed());
        assert_eq!(reply.text(), format!("round {round}"));
        cursor = reply.cursor();
    }
    println!("publish on B to response on A: {latencies:?}");
    for latency in &latencies {
        assert!(*latency < Duration::from_millis(50), "{latencies:?}");
    }
}

#[tokio::test]
async fn a_client_moving_to_another_node_with_its_cursor_gets_every_event_in_order() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let a = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let b = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let c0 = b.hub().publish("cat", Event::new("e0")).await.unwrap();

    // Parked on A when A goes away.
    let mut conn = Conn::connect(a.server.addr).await;
    conn.send("GET", &format!("/poll/cat?since={c0}"), &[])
        .await;
    a.server.parked(1).await;
    a.hub().shutdown();
    assert_eq!(
        conn.response(false).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    a.server.stop().await.unwrap();

    for n in 1..=5 {
        b.hub()
            .publish("cat", Event::new(format!("e{n}")))
            .await
            .unwrap();
    }
    let mut cursor = c0.to_string();
    for n in 1..=5 {
        let reply = get(b.server.addr, &format!("/poll/cat?since={cursor}")).await;
        assert_eq!(reply.text(), format!("e{n}"));
        assert_eq!(reply.header("longpoll-gap"), None);
        cursor = reply.cursor();
    }
    let caught_up = get(
        b.server.addr,
        &format!("/poll/cat?since={cursor}&timeout=0"),
    )
    .await;
    assert_eq!(caught_up.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_delivery_position_of_cursorless_clients_is_shared_by_the_nodes() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let a = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let b = Node::start(&url, &prefix, Duration::from_secs(20)).await;

    let mut conn = Conn::connect(a.server.addr).await;
    conn.send("GET", "/poll/dot", &[]).await;
    a.server.parked(1).await;
    b.hub().publish("dot", Event::new("e1")).await.unwrap();
    assert_eq!(conn.response(false).await.text(), "e1");

    // A goes away with a poll parked; events keep coming through B.
    conn.send("GET", "/poll/dot", &[]).await;
    a.server.parked(1).await;
    drop(conn);
    a.server.parked(0).await;
    a.server.stop().await.unwrap();
    for n in 2..=4 {
        b.hub()
            .publish("dot", Event::new(format!("e{n}")))
            .await
            .unwrap();
    }
    let mut conn = Conn::connect(b.server.addr).await;
    for n in 2..=4 {
        conn.send("GET", "/poll/dot", &[]).await;
        assert_eq!(conn.response(false).await.text(), format!("e{n}"));
    }
    conn.send("GET", "/poll/dot?timeout=0", &[]).await;
    assert_eq!(conn.response(false).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn several_nodes_share_a_broadcast_id() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let nodes = [
        Node::start(&url, &prefix, Duration::from_secs(20)).await,
        Node::start(&url, &prefix, Duration::from_secs(20)).await,
        Node::start(&url, &prefix, Duration::from_secs(20)).await,
    ];
    let mut conns = Vec::new();
    for node in &nodes {
        for _ in 0..3 {
            let mut conn = Conn::connect(node.server.addr).await;
            conn.send("GET", "/poll/news", &[]).await;
            conns.push(conn);
        }
    }
    for node in &nodes {
        node.server.parked(3).await;
        eventually("subscribed", || node.store.subscribed_ids() == 1).await;
    }
    nodes[0]
        .hub()
        .publish("news", Event::new("to everyone"))
        .await
        .unwrap();
    for conn in &mut conns {
        assert_eq!(conn.response(false).await.text(), "to everyone");
    }
}

/// A waiter reads its log once the store's watch is done; a publish on
/// another node after that read must reach it, so the watch may only be done
/// once Redis runs the subscription. Each round publishes on the id's wake-up
/// channel the moment its watch is done, with a client of its own, and
/// counts the subscribers Redis reports. (fred finishes SUBSCRIBE before
/// Redis has run it; a gateway test lost a cross-node wake-up to that on a
/// loaded machine. The store now waits for a PING behind the SUBSCRIBE; a
/// watch done before its subscription fails here in most rounds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_is_in_force_in_redis_once_it_is_done() {
    use fred::interfaces::{ClientLike, PubsubInterface};

    let (url, prefix) = (redis_url(), unique_prefix());
    let watcher = store(&url, &prefix).await;
    let publisher =
        fred::types::Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
            .build()
            .unwrap();
    publisher.init().await.unwrap();
    const ROUNDS: usize = 2_000;
    let mut missed = Vec::new();
    for round in 0..ROUNDS {
        let id = format!("fresh-{round}");
        watcher.watch(&id).await.unwrap();
        let subscribers: i64 = publisher
            .publish(format!("{prefix}:wake:{id}"), "test")
            .await
            .unwrap();
        if subscribers != 1 {
            missed.push(round);
        }
        watcher.unwatch(&id);
    }
    assert!(
        missed.is_empty(),
        "{} of {ROUNDS} publishes found nobody subscribed, the first in rounds {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
    let _ = publisher.quit().await;
}

#[tokio::test]
async fn a_publish_to_an_id_nobody_polls_wakes_no_node() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let idle = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let busy = Node::start(&url, &prefix, Duration::from_secs(20)).await;
    let publisher = Node::start(&url, &prefix, Duration::from_secs(20)).await;

    let mut conn = Conn::connect(busy.server.addr).await;
    conn.send("GET", "/poll/watched", &[]).await;
    busy.server.parked(1).await;
    eventually("subscribed", || busy.store.subscribed_ids() == 1).await;

    for n in 0..50 {
        publisher
            .hub()
            .publish(format!("unwatched-{n}"), Event::new("x"))
            .await
            .unwrap();
    }
    publisher
        .hub()
        .publish("watched", Event::new("y"))
        .await
        .unwrap();
    assert_eq!(conn.response(false).await.text(), "y");
    assert_eq!(
        idle.store.wakeups_received(),
        0,
        "an idle node is never woken"
    );
    assert_eq!(busy.store.wakeups_received(), 1, "only for the id it holds");
    assert_eq!(idle.store.subscribed_ids(), 0);
}

#[tokio::test]
async fn stats_count_the_ids_and_events_in_redis() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let store = RedisStore::builder(&url)
        .prefix(&prefix)
        .stats_interval(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    let hub = Hub::builder().store(store).build();
    for n in 0..3 {
        hub.publish(format!("id-{n}"), Event::new("a"))
            .await
            .unwrap();
        hub.publish(format!("id-{n}"), Event::new("b"))
            .await
            .unwrap();
    }
    eventually("ids and events counted", || {
        let stats = hub.stats();
        stats.ids == 3 && stats.kept_events == 6
    })
    .await;
}

#[tokio::test]
async fn redis_unreachable_at_start_is_a_clear_error() {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let err = RedisStore::builder(&url).connect().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)));
    assert!(
        message.contains(&format!("cannot connect to Redis at {url}")),
        "{message}"
    );
    assert!(started.elapsed() < PATIENCE);

    let err = RedisStore::builder("http://not-redis")
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot use Redis at http://not-redis: expected a redis:// or rediss:// URL"),
        "{err}"
    );
}

/// A `redis-server` of the test's own, with an append-only file synced on
/// every write, so that a restart keeps what it accepted.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    fn binary() -> String {
        std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
    }

    async fn start() -> PrivateRedis {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("lp-redis-{port}-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = PrivateRedis {
            child: None,
            port,
            dir,
        };
        redis.run().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let child = Command::new(Self::binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {}: {err} (scripts/test.sh installs it)",
                    Self::binary()
                )
            });
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops it by its PID and waits for it to exit.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn redis_stopped_and_restarted_loses_nothing_that_was_accepted() {
    let mut redis = PrivateRedis::start().await;
    let prefix = unique_prefix();
    let a = Node::start(&redis.url(), &prefix, Duration::from_secs(30)).await;
    let b = Node::start(&redis.url(), &prefix, Duration::from_secs(30)).await;
    let short = Node::start(&redis.url(), &prefix, Duration::from_millis(500)).await;

    let start = b.hub().publish("eve", Event::new("before")).await.unwrap();
    let mut accepted = vec!["before".to_owned()];

    // A poll parked on A across the outage, and one that times out during it.
    let mut across = Conn::connect(a.server.addr).await;
    across
        .send("GET", &format!("/poll/eve?since={start}"), &[])
        .await;
    let mut timing_out = Conn::connect(short.server.addr).await;
    timing_out
        .send("GET", &format!("/poll/eve?since={start}"), &[])
        .await;
    a.server.parked(1).await;
    short.server.parked(1).await;
    eventually("A subscribed", || a.store.subscribed_ids() == 1).await;

    redis.stop().await;
    let err = b
        .hub()
        .publish("eve", Event::new("while down"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Store(StoreError::Backend(_))),
        "{err}"
    );
    let timed_out = timing_out.response(false).await;
    assert_eq!(
        timed_out.status,
        StatusCode::NO_CONTENT,
        "parked polls time out normally"
    );
    assert_eq!(timed_out.cursor(), start.to_string());
    let refused = get(b.server.addr, "/poll/eve").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());

    redis.run().await;
    // Publishes succeed again once the client has reconnected.
    let deadline = Instant::now() + PATIENCE;
    let after = loop {
        match b.hub().publish("eve", Event::new("after")).await {
            Ok(cursor) => break cursor,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("Redis is back but publishing fails: {err}"),
        }
    };
    accepted.push("after".to_owned());
    assert_eq!(after.epoch(), start.epoch(), "the log survived the restart");

    // The poll parked on A through the outage is woken by the publish on B.
    let reply = within("the poll across the outage", across.response(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "after");

    // Every accepted event is there, in order, none missing.
    let mut seen = Vec::new();
    let mut cursor = Cursor::new(start.epoch(), 0).to_string();
    loop {
        let reply = get(
            b.server.addr,
            &format!("/poll/eve?since={cursor}&timeout=0"),
        )
        .await;
        if reply.status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(reply.header("longpoll-gap"), None);
        seen.push(reply.text().to_owned());
        cursor = reply.cursor();
    }
    assert_eq!(seen, accepted);
}

#[tokio::test]
async fn two_demos_on_one_redis_share_events() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-demo-{:016x}", fastrand::u64(..));
    let a = Example::start("demo", &["--redis", &url, "--redis-prefix", &prefix]).await;
    let b = Example::start("demo", &["--redis", &url, "--redis-prefix", &prefix]).await;

    let mut poll = Conn::connect(a.addr).await;
    poll.send("GET", "/poll/zoe", &[]).await;
    eventually_metric(a.addr, "longpoll_waiters", 1).await;
    let mut publish = Conn::connect(b.addr).await;
    publish
        .send_with_body("POST", "/publish/zoe", &[], b"via b")
        .await;
    assert_eq!(publish.response(false).await.status, StatusCode::ACCEPTED);
    assert_eq!(poll.response(false).await.text(), "via b");

    assert_eq!(a.terminate().await.code(), Some(0));
    assert_eq!(b.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn the_demo_refuses_to_start_without_its_redis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tokio::process::Command::new(example_path("demo"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .output();
    let output = within("the demo to give up", output).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to Redis at redis://127.0.0.1:"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_demo_answers_503_to_publishes_while_redis_is_away() {
    let mut redis = PrivateRedis::start().await;
    let demo = Example::start("demo", &["--redis", &redis.url()]).await;
    let mut publish = Conn::connect(demo.addr).await;
    publish
        .send_with_body("POST", "/publish/kit", &[], b"one")
        .await;
    assert_eq!(publish.response(false).await.status, StatusCode::ACCEPTED);

    redis.stop().await;
    publish
        .send_with_body("POST", "/publish/kit", &[], b"two")
        .await;
    let refused = publish.response(false).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    assert!(refused.text().contains("backend"), "{}", refused.text());

    redis.run().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        publish
            .send_with_body("POST", "/publish/kit", &[], b"three")
            .await;
        let reply = publish.response(false).await;
        if reply.status == StatusCode::ACCEPTED {
            break;
        }
        assert!(Instant::now() < deadline, "publishing never recovered");
    }
    let first = get(demo.addr, "/poll/kit").await;
    assert_eq!(first.text(), "one");
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn events_keep_their_status_and_headers_in_redis() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let a = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let b = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("x-one", "1".parse().unwrap());
    headers.append("x-many", "a".parse().unwrap());
    headers.append("x-many", "b: c".parse().unwrap());
    let event = Event::new("made")
        .content_type("text/plain")
        .status(StatusCode::CREATED)
        .headers(headers);
    b.hub().publish("res", event).await.unwrap();
    let reply = get(a.server.addr, "/poll/res").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.text(), "made");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-one"), Some("1"));
    let many: Vec<_> = reply
        .headers
        .get_all("x-many")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(many, ["a", "b: c"]);
}
