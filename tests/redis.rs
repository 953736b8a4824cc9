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
use support::redis::{RedisCluster, RedisSentinels};
use support::{Conn, PATIENCE, TestServer, drain, eventually, get, redis, within};
use tower_longpoll::store::{
    Notifier, ReadFrom, ReadResult, RedisStore, Store, StoreError, StoreFuture, StoreStats,
};
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

async fn a_cursor_from_one_node_is_understood_by_another(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
    let a = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let b = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let c1 = b.hub().publish("amy", Event::new("one")).await.unwrap();
    let c2 = b
        .hub()
        .publish("amy", Event::new("two").content_type("text/plain"))
        .await
        .unwrap();
    assert_eq!(c1.epoch(), c2.epoch());
    assert!(c1.seq() < c2.seq());

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

async fn a_poll_on_node_a_is_answered_by_a_publish_on_node_b_within_50_ms(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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

async fn a_client_moving_to_another_node_with_its_cursor_gets_every_event_in_order(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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

async fn the_delivery_position_of_cursorless_clients_is_shared_by_the_nodes(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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

async fn several_nodes_share_a_broadcast_id(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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
async fn a_watch_is_in_force_in_redis_once_it_is_done(url: &str) {
    use fred::interfaces::{ClientLike, PubsubInterface};

    let (url, prefix) = (url.to_owned(), unique_prefix());
    let watcher = store(&url, &prefix).await;
    let publisher =
        fred::types::Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
            .build()
            .unwrap();
    publisher.init().await.unwrap();
    let clustered = url.starts_with("redis-cluster");
    let rounds: usize = if clustered { 500 } else { 2_000 };
    let mut missed = Vec::new();
    for round in 0..rounds {
        let id = format!("fresh-{round}");
        watcher.watch(&id).await.unwrap();
        let channel = format!("{prefix}:{{{id}}}:w");
        let subscribers: i64 = if clustered {
            publisher.spublish(channel, "test").await.unwrap()
        } else {
            publisher.publish(channel, "test").await.unwrap()
        };
        if subscribers != 1 {
            missed.push(round);
        }
        watcher.unwatch(&id);
    }
    assert!(
        missed.is_empty(),
        "{} of {rounds} publishes found nobody subscribed, the first in rounds {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
    let _ = publisher.quit().await;
}

async fn a_publish_to_an_id_nobody_polls_wakes_no_node(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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

async fn stats_count_the_ids_and_events_in_redis(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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
    let mut last = (0, 0);
    let counted = tokio::time::timeout(PATIENCE, async {
        loop {
            let stats = hub.stats();
            last = (stats.ids, stats.kept_events);
            if last == (3, 6) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "ids and events counted: {last:?}");
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
            .contains("cannot use Redis at http://not-redis: expected a redis://, redis-cluster:// or redis-sentinel:// URL"),
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

async fn events_keep_their_status_and_headers_in_redis(url: &str) {
    let (url, prefix) = (url.to_owned(), unique_prefix());
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

/// Each scenario above runs on the Redis at `REDIS_URL`, on a Redis Cluster
/// of this test's own (3 primaries, 1 replica each) and behind Sentinels of
/// its own (a primary, a replica, 3 Sentinels).
macro_rules! on_standalone_and_cluster {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::redis_url()).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_scenario_behind_redis_sentinel() {
            let sentinels = RedisSentinels::start().await;
            let url = sentinels.url();
            $(
                println!("behind Sentinel: {}", stringify!($name));
                $name(&url).await;
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_scenario_on_a_redis_cluster() {
            let cluster = RedisCluster::start(3, 1).await;
            let url = cluster.url();
            $(
                println!("on the cluster: {}", stringify!($name));
                $name(&url).await;
            )*
        }
    };
}

on_standalone_and_cluster!(
    a_cursor_from_one_node_is_understood_by_another,
    a_poll_on_node_a_is_answered_by_a_publish_on_node_b_within_50_ms,
    a_client_moving_to_another_node_with_its_cursor_gets_every_event_in_order,
    the_delivery_position_of_cursorless_clients_is_shared_by_the_nodes,
    several_nodes_share_a_broadcast_id,
    a_watch_is_in_force_in_redis_once_it_is_done,
    a_publish_to_an_id_nobody_polls_wakes_no_node,
    stats_count_the_ids_and_events_in_redis,
    events_keep_their_status_and_headers_in_redis,
    the_keys_of_an_id_share_its_hash_tag,
    a_retried_publish_with_its_idempotency_key_is_kept_once,
);

/// Every key of an id, and its channel, carry the hash tag `{id}`: on a
/// cluster a script may only touch the keys of one slot.
async fn the_keys_of_an_id_share_its_hash_tag(url: &str) {
    let prefix = unique_prefix();
    let node = Node::start(url, &prefix, Duration::from_secs(10)).await;
    node.hub().publish("tagged", Event::new("x")).await.unwrap();
    let reply = get(node.server.addr, "/poll/tagged?since=0&timeout=0").await;
    assert_eq!(reply.text(), "x");
    if url.starts_with("redis://") {
        let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
        let keys = redis::cli(
            port.parse().unwrap(),
            &["--scan", "--pattern", &format!("{prefix}:*")],
        );
        let mut keys: Vec<_> = keys.lines().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                format!("{prefix}:{{tagged}}:l"),
                format!("{prefix}:{{tagged}}:m")
            ]
        );
    }
}

/// Redis loses acknowledged writes: e1-e3 are in its RDB, e4-e5 were
/// appended after it and die with a `kill -9`; restarted from the RDB, it
/// takes new events. Sequence numbers from a plain counter would be given
/// again (e4's cursor would name the new e6'), and a client holding e5's or
/// e4's cursor would skip events silently. Each gets the gap flag and then
/// every event published since; a client at e3 (which Redis kept) misses
/// nothing and gets no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_a_history_redis_lost_gets_the_gap_flag() {
    let mut redis = redis::RedisServer::start(&["--appendonly", "no"]).await;
    let prefix = unique_prefix();
    let node = Node::start(&redis.url(), &prefix, Duration::from_secs(10)).await;
    let mut cursors = Vec::new();
    for n in 1..=3 {
        cursors.push(
            node.hub()
                .publish("rb", Event::new(format!("e{n}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(redis.cli(&["SAVE"]), "OK");
    for n in 4..=5 {
        cursors.push(
            node.hub()
                .publish("rb", Event::new(format!("e{n}")))
                .await
                .unwrap(),
        );
    }
    redis.kill().await;
    redis.run().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match node.hub().publish("rb", Event::new("e6")).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("Redis is back but publishing fails: {err}"),
        }
    }
    node.hub().publish("rb", Event::new("e7")).await.unwrap();
    node.hub().publish("rb", Event::new("e8")).await.unwrap();

    for lost in [4, 3] {
        let cursor = cursors[lost].to_string();
        let (seen, gap) = drain(node.server.addr, "rb", cursor).await;
        assert!(gap, "e{}'s cursor: no gap flag, got {seen:?}", lost + 1);
        // Exactly what was published since: the client has e1-e3 already.
        assert_eq!(seen, ["e6", "e7", "e8"], "e{}'s cursor", lost + 1);
    }
    let (seen, gap) = drain(node.server.addr, "rb", cursors[2].to_string()).await;
    assert_eq!(seen, ["e6", "e7", "e8"]);
    assert!(!gap, "e3 was kept: nothing was missed");
}

/// A Redis that forgets (no persistence) after a restart: the log is gone
/// whole, so every old cursor is from another epoch and gets the gap flag.
#[tokio::test]
async fn a_log_lost_whole_gives_every_old_cursor_the_gap_flag() {
    let mut redis = redis::RedisServer::start(&["--appendonly", "no"]).await;
    let prefix = unique_prefix();
    let node = Node::start(&redis.url(), &prefix, Duration::from_secs(10)).await;
    let old = node.hub().publish("gone", Event::new("old")).await.unwrap();
    redis.kill().await;
    redis.run().await;
    let deadline = Instant::now() + PATIENCE;
    while node.hub().publish("gone", Event::new("new")).await.is_err() {
        assert!(Instant::now() < deadline, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (seen, gap) = drain(node.server.addr, "gone", old.to_string()).await;
    assert!(gap);
    assert_eq!(seen, ["new"]);
}

/// One small event must not cost an id kilobytes of Redis memory (a stream
/// preallocates a 4 KB node), and the figure is what `MEMORY USAGE` says.
#[tokio::test]
async fn an_id_with_one_200_byte_event_costs_at_most_1_kb_in_redis() {
    let url = redis_url();
    let prefix = unique_prefix();
    let node = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    node.hub()
        .publish(
            "small",
            Event::new("x".repeat(200)).content_type("text/plain"),
        )
        .await
        .unwrap();
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut total = 0;
    for key in ["l", "m"] {
        let usage = redis::cli(
            port,
            &["MEMORY", "USAGE", &format!("{prefix}:{{small}}:{key}")],
        );
        total += usage
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("MEMORY USAGE: {usage:?}"));
    }
    println!("one id with one 200-byte event: {total} bytes of Redis memory");
    assert!(total <= 1024, "{total} bytes");

    // Each further event costs about its own size, not a node per event.
    for _ in 1..64 {
        node.hub()
            .publish(
                "small",
                Event::new("x".repeat(200)).content_type("text/plain"),
            )
            .await
            .unwrap();
    }
    let mut full = 0;
    for key in ["l", "m"] {
        let usage = redis::cli(
            port,
            &[
                "MEMORY",
                "USAGE",
                &format!("{prefix}:{{small}}:{key}"),
                "SAMPLES",
                "0",
            ],
        );
        full += usage.parse::<usize>().unwrap();
    }
    let per_event = (full - total) / 63;
    println!("64 such events: {full} bytes, {per_event} bytes per further event");
    assert!(per_event <= 300, "{per_event} bytes per 200-byte event");
}

#[cfg(not(feature = "redis-tls"))]
#[tokio::test]
async fn tls_urls_are_refused_without_the_redis_tls_feature() {
    let port = redis::free_port();
    for url in [
        format!("rediss://127.0.0.1:{port}"),
        format!("rediss-cluster://127.0.0.1:{port}"),
    ] {
        let err = RedisStore::builder(&url).connect().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("TLS needs the `redis-tls` feature"),
            "{err}"
        );
    }
}

/// `rediss://` speaks TLS or nothing: to a `redis-server --tls-port` with a
/// self-signed certificate, two nodes share events (commands and wake-ups
/// over TLS) when the store trusts that certificate; with the system's
/// roots the certificate is refused; and a `rediss://` URL naming a
/// plaintext port fails rather than talk in plaintext.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_speaks_tls_or_nothing() {
    use fred::rustls;
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    use fred::types::config::{Config, ServerConfig, TlsConfig, TlsConnector, TlsHostMapping};

    let dir = std::env::temp_dir().join(format!("lp-tls-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // A CA, and a server certificate for 127.0.0.1 signed by it (rustls
    // refuses a CA's certificate as a server's).
    let ca = dir.join("ca.pem");
    let openssl = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let os = |text: &'static str| std::ffi::OsStr::new(text);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        os("req"),
        os("-x509"),
        os("-newkey"),
        os("rsa:2048"),
        os("-nodes"),
        os("-days"),
        os("1"),
        os("-subj"),
        os("/CN=longpoll test CA"),
        os("-keyout"),
        os("ca.key"),
        os("-out"),
        os("ca.pem"),
    ]);
    openssl(&[
        os("req"),
        os("-newkey"),
        os("rsa:2048"),
        os("-nodes"),
        os("-subj"),
        os("/CN=127.0.0.1"),
        os("-keyout"),
        os("key.pem"),
        os("-out"),
        os("leaf.csr"),
    ]);
    openssl(&[
        os("x509"),
        os("-req"),
        os("-in"),
        os("leaf.csr"),
        os("-CA"),
        os("ca.pem"),
        os("-CAkey"),
        os("ca.key"),
        os("-CAcreateserial"),
        os("-days"),
        os("1"),
        os("-extfile"),
        os("leaf.ext"),
        os("-out"),
        os("cert.pem"),
    ]);
    let tls_port = redis::free_port();
    let (cert_path, key_path) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = redis::RedisServer::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert_path,
        "--tls-key-file",
        key_path,
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ])
    .await;

    let trusting = || {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ca).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Config {
            server: ServerConfig::new_centralized("127.0.0.1", tls_port),
            tls: Some(TlsConfig {
                connector: TlsConnector::from(tls),
                hostnames: TlsHostMapping::None,
            }),
            ..Config::default()
        }
    };
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::builder_from_config(trusting())
            .prefix(&prefix)
            .connect()
            .await
            .unwrap();
        let layer = LongPollLayer::builder(Hub::builder().store(store.clone()).build())
            .route("/poll/{client}")
            .timeout(Duration::from_secs(10))
            .build();
        nodes.push(Node {
            server: TestServer::start(layer).await,
            store,
        });
    }
    let mut conn = Conn::connect(nodes[0].server.addr).await;
    conn.send("GET", "/poll/sec", &[]).await;
    nodes[0].server.parked(1).await;
    eventually("subscribed", || nodes[0].store.subscribed_ids() == 1).await;
    nodes[1]
        .hub()
        .publish("sec", Event::new("over tls"))
        .await
        .unwrap();
    assert_eq!(conn.response(false).await.text(), "over tls");

    // The system's roots do not know the certificate.
    let err = RedisStore::builder(format!("rediss://127.0.0.1:{tls_port}"))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect to Redis"), "{err}");
    // A plaintext server named with rediss:// is not spoken to in plaintext.
    let err = RedisStore::builder(format!("rediss://127.0.0.1:{}", server.port()))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect to Redis"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_prefix_with_a_hash_tag_is_refused() {
    let err = RedisStore::builder(redis_url())
        .prefix("a{b}")
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must not contain"), "{err}");
}

/// A TCP proxy in front of Redis that can stop forwarding on the
/// connections that carried a SUBSCRIBE, without closing them: a half-open
/// link, as a NAT or a load balancer that forgot the flow leaves behind.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    links: std::sync::Arc<std::sync::Mutex<Vec<ProxyLink>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Default)]
struct ProxyLink {
    subscriber: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingProxy {
    async fn start(upstream: String) -> FreezingProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ProxyLink>::new()));
        let registry = links.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let link = ProxyLink::default();
                registry.lock().unwrap().push(link.clone());
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = link.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 16 * 1024];
                    loop {
                        let Ok(n) = client_read.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            let _ = server_write.shutdown().await;
                            return;
                        }
                        let chunk = &buf[..n];
                        if chunk
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            up.subscriber.store(true, Ordering::SeqCst);
                        }
                        if up.frozen.load(Ordering::SeqCst) {
                            // Hold both sockets open and forward nothing.
                            std::future::pending::<()>().await;
                        }
                        if server_write.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                });
                let down = link;
                tokio::spawn(async move {
                    let mut buf = vec![0; 16 * 1024];
                    loop {
                        let Ok(n) = server_read.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            let _ = client_write.shutdown().await;
                            return;
                        }
                        // Redis confirms a subscription, or pushes a message,
                        // only on a subscriber connection.
                        let chunk = &buf[..n];
                        if chunk
                            .windows(9)
                            .any(|w| w == b"subscribe" || w == b"\r\nmessage")
                        {
                            down.subscriber.store(true, Ordering::SeqCst);
                        }
                        if down.frozen.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FreezingProxy { addr, links, task }
    }

    /// Freezes every subscriber connection open now; returns how many.
    fn freeze_subscribers(&self) -> usize {
        use std::sync::atomic::Ordering;
        let links = self.links.lock().unwrap();
        let mut frozen = 0;
        for link in links.iter() {
            if link.subscriber.load(Ordering::SeqCst) && !link.frozen.load(Ordering::SeqCst) {
                link.frozen.store(true, Ordering::SeqCst);
                frozen += 1;
            }
        }
        frozen
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A store that tells a test when a poll is parked for good: its waiter
/// watched the id and then finished a read, so that only a wake-up can
/// answer it now. `done` holds the number of watches made before the
/// start of the latest finished read.
struct CountingReads {
    store: RedisStore,
    watches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Reads started and finished.
    reads: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

impl Store for CountingReads {
    fn append(&self, id: &str, event: Event) -> StoreFuture<Result<Cursor, StoreError>> {
        self.store.append(id, event)
    }

    fn read(
        &self,
        id: &str,
        from: ReadFrom,
        max_events: usize,
    ) -> StoreFuture<Result<ReadResult, StoreError>> {
        let watched = self.watches.load(std::sync::atomic::Ordering::SeqCst);
        let read = self.store.read(id, from, max_events);
        let done = self.done.clone();
        let reads = self.reads.clone();
        reads.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        StoreFuture::new(async move {
            let result = read.await;
            reads.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            done.fetch_max(watched, std::sync::atomic::Ordering::SeqCst);
            result
        })
    }

    fn commit(&self, id: &str, cursor: Cursor) -> StoreFuture<Result<(), StoreError>> {
        self.store.commit(id, cursor)
    }

    fn watch(&self, id: &str) -> StoreFuture<Result<(), StoreError>> {
        self.watches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.store.watch(id)
    }

    fn unwatch(&self, id: &str) {
        self.store.unwatch(id);
    }

    fn attach(&self, notifier: Notifier) {
        self.store.attach(notifier);
    }

    fn stats(&self) -> StoreStats {
        self.store.stats()
    }
}

/// The subscriber link of node A dies without a FIN. Nothing would tell A:
/// it would hear no more wake-ups, and its polls would be answered only at
/// their timeout. The heartbeat finds the link dead within the probe
/// interval, A reconnects and subscribes again, and the poll parked on A
/// gets B's event within the probe interval + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_subscriber_link_is_found_and_replaced_within_the_probe_interval() {
    let url = redis_url();
    let upstream = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = FreezingProxy::start(upstream).await;
    let prefix = unique_prefix();
    let probe = Duration::from_millis(500);
    let store = RedisStore::builder(format!("redis://{}", proxy.addr))
        .prefix(&prefix)
        .probe_interval(probe)
        .connect()
        .await
        .unwrap();
    let watches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = CountingReads {
        store: store.clone(),
        watches: watches.clone(),
        done: reads.clone(),
        reads: Default::default(),
    };
    let watches_made = || watches.load(std::sync::atomic::Ordering::SeqCst);
    let read_after = |watch: usize| reads.load(std::sync::atomic::Ordering::SeqCst) > watch;
    let hub = Hub::builder().store(counting).build();
    let layer = LongPollLayer::builder(hub)
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .jitter(0.0)
        .build();
    let a = Node {
        server: TestServer::start(layer).await,
        store,
    };
    let b = Node::start(&url, &prefix, Duration::from_secs(30)).await;

    let mut conn = Conn::connect(a.server.addr).await;
    let watched_before = watches_made();
    conn.send("GET", "/poll/half", &[]).await;
    a.server.parked(1).await;
    eventually("A's poll watched, then read its log", || {
        read_after(watched_before)
    })
    .await;
    b.hub().publish("half", Event::new("before")).await.unwrap();
    let before = within("the wake-up before the cut", conn.response(false)).await;
    assert_eq!(
        a.store.wakeups_received(),
        1,
        "the link carried the wake-up"
    );
    assert_eq!(before.text(), "before");

    // Parked, and past its first read: the event must come by a wake-up.
    let watched_before = watches_made();
    conn.send("GET", &format!("/poll/half?since={}", before.cursor()), &[])
        .await;
    a.server.parked(1).await;
    eventually("A's poll watched, then read its log", || {
        read_after(watched_before)
    })
    .await;
    let wakeups = a.store.wakeups_received();
    assert!(
        proxy.freeze_subscribers() >= 1,
        "no subscriber connection seen"
    );
    let cut = Instant::now();
    b.hub().publish("half", Event::new("after")).await.unwrap();
    let after = tokio::time::timeout(probe + Duration::from_secs(1), conn.response(false))
        .await
        .expect("the wake-up after the cut did not come within the probe interval + 1 s");
    println!(
        "wake-up across a dead subscriber link after {:?}",
        cut.elapsed()
    );
    assert_eq!(after.text(), "after");
    assert!(
        a.store.link_resets() >= 1,
        "answered after {:?} with no reset; wake-ups received {} then {}, frozen {}",
        cut.elapsed(),
        wakeups,
        a.store.wakeups_received(),
        proxy.freeze_subscribers()
    );

    // And the new link carries wake-ups again.
    let watched_before = watches_made();
    conn.send("GET", &format!("/poll/half?since={}", after.cursor()), &[])
        .await;
    a.server.parked(1).await;
    eventually("A's poll watched, then read its log", || {
        read_after(watched_before)
    })
    .await;
    let started = Instant::now();
    b.hub().publish("half", Event::new("again")).await.unwrap();
    let again = within("the wake-up on the new link", conn.response(false)).await;
    assert_eq!(again.text(), "again");
    assert!(started.elapsed() < probe, "{:?}", started.elapsed());
}

/// A publisher that retries after a lost reply sends the same idempotency
/// key: the retry, on any node, gets the first cursor and keeps nothing new.
async fn a_retried_publish_with_its_idempotency_key_is_kept_once(url: &str) {
    let prefix = unique_prefix();
    let a = Node::start(url, &prefix, Duration::from_secs(10)).await;
    let b = Node::start(url, &prefix, Duration::from_secs(10)).await;
    let first = a
        .hub()
        .publish_idempotent("idem", "k1", Event::new("once"))
        .await
        .unwrap();
    let retry = b
        .hub()
        .publish_idempotent("idem", "k1", Event::new("once"))
        .await
        .unwrap();
    assert_eq!(first, retry);
    let other = b
        .hub()
        .publish_idempotent("idem", "k2", Event::new("twice"))
        .await
        .unwrap();
    assert!(other.seq() > first.seq());
    let (seen, gap) = drain(a.server.addr, "idem", "0".to_owned()).await;
    assert_eq!(seen, ["once", "twice"]);
    assert!(!gap);
}

#[tokio::test]
async fn the_demo_publishes_once_per_idempotency_key() {
    let url = redis_url();
    let prefix = unique_prefix();
    let demo = Example::start("demo", &["--redis", &url, "--redis-prefix", &prefix]).await;
    let mut publish = Conn::connect(demo.addr).await;
    let mut etags = Vec::new();
    for _ in 0..2 {
        publish
            .send_with_body("POST", "/publish/ik", &[("idempotency-key", "abc")], b"one")
            .await;
        let reply = publish.response(false).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        etags.push(reply.header("etag").unwrap().to_owned());
    }
    assert_eq!(etags[0], etags[1]);
    let (seen, _) = drain(demo.addr, "ik", "0".to_owned()).await;
    assert_eq!(seen, ["one"]);
    assert_eq!(demo.terminate().await.code(), Some(0));
}

/// A publish to an id with many polls parked on one node costs that node
/// one read (or a few), not one per poll: the woken waiters read the same
/// cursor together, and the node sends that read to Redis once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiters_of_an_id_woken_together_share_one_read() {
    const POLLS: usize = 200;
    let (url, prefix) = (redis_url(), unique_prefix());
    let store = store(&url, &prefix).await;
    let counting = CountingReads {
        store: store.clone(),
        watches: Default::default(),
        done: Default::default(),
        reads: Default::default(),
    };
    let reads = counting.reads.clone();
    let layer = LongPollLayer::builder(Hub::builder().store(counting).build())
        .route("/poll/{client}")
        .max_per_id(POLLS)
        .timeout(Duration::from_secs(30))
        .jitter(0.0)
        .build();
    let a = Node {
        server: TestServer::start(layer).await,
        store,
    };
    let b = Node::start(&url, &prefix, Duration::from_secs(30)).await;
    let start = b.hub().publish("crowd", Event::new("e0")).await.unwrap();
    let mut conns = Vec::with_capacity(POLLS);
    for _ in 0..POLLS {
        let mut conn = Conn::connect(a.server.addr).await;
        conn.send("GET", &format!("/poll/crowd?since={start}"), &[])
            .await;
        conns.push(conn);
    }
    a.server.parked(POLLS).await;
    eventually("A subscribed", || a.store.subscribed_ids() == 1).await;
    // Every poll parked and every read finished: only a wake-up moves them.
    use std::sync::atomic::Ordering::SeqCst;
    eventually("every read finished", || {
        reads.0.load(SeqCst) == reads.1.load(SeqCst) && reads.1.load(SeqCst) >= POLLS
    })
    .await;
    let (reads_before, commits_before) = (a.store.reads_sent(), a.store.commits_sent());
    b.hub().publish("crowd", Event::new("e1")).await.unwrap();
    for conn in &mut conns {
        assert_eq!(conn.response(false).await.text(), "e1");
    }
    let reads = a.store.reads_sent() - reads_before;
    eventually("the commits sent", || {
        a.store.commits_sent() > commits_before
    })
    .await;
    let commits = a.store.commits_sent() - commits_before;
    println!("{POLLS} polls woken on one node: {reads} read scripts, {commits} commit scripts");
    // One read and one commit; a second of either only if a wake-up or a
    // commit raced the first.
    assert!(reads <= 2, "{reads} reads for {POLLS} woken polls");
    assert!(commits <= 2, "{commits} commits for {POLLS} answered polls");

    // The woken polls come back with e1's cursor: they share one read too.
    let cursor = b.hub().publish("crowd", Event::new("e2")).await.unwrap();
    let (reads_before, commits_before) = (a.store.reads_sent(), a.store.commits_sent());
    for conn in &mut conns {
        conn.send("GET", &format!("/poll/crowd?since={cursor}&timeout=0"), &[])
            .await;
    }
    for conn in &mut conns {
        assert_eq!(conn.response(false).await.status, StatusCode::NO_CONTENT);
    }
    let reads = a.store.reads_sent() - reads_before;
    println!("{POLLS} polls at the newest cursor: {reads} read scripts");
    assert!(
        reads <= 2,
        "{reads} reads for {POLLS} polls from one cursor"
    );
    assert_eq!(
        a.store.commits_sent(),
        commits_before,
        "a keepalive commits nothing"
    );
}

/// Publishes `data` on `id` until Redis acknowledges it again (it is failing
/// over meanwhile), trying every `pause`; fails past `deadline`, with
/// `context()` in the message. Returns how long since `started`.
async fn publish_once_resumed(
    hub: &Hub,
    id: &str,
    data: &'static str,
    (started, deadline, pause): (Instant, Instant, Duration),
    context: impl Fn() -> String,
) -> Duration {
    loop {
        match hub.publish(id, Event::new(data)).await {
            Ok(_) => return started.elapsed(),
            Err(err) => assert!(
                Instant::now() < deadline,
                "publishing never resumed: {err}{}",
                context()
            ),
        }
        tokio::time::sleep(pause).await;
    }
}

/// Asserts that a cursor client reading `id` from the start of `start`'s
/// epoch gets exactly `acknowledged`, in order, with no gap.
async fn assert_every_acknowledged_event(
    addr: std::net::SocketAddr,
    id: &str,
    start: Cursor,
    acknowledged: &[String],
) {
    let (seen, gap) = drain(addr, id, Cursor::new(start.epoch(), 0).to_string()).await;
    assert!(!gap);
    assert_eq!(seen, acknowledged);
}

/// `SENTINEL FAILOVER` while a client follows an id with its cursor: the
/// node finds the new primary by itself (the old one answers `READONLY`),
/// publishes resume within seconds, and every acknowledged event reaches
/// the client in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_resume_after_a_sentinel_failover() {
    let sentinels = RedisSentinels::start().await;
    let url = sentinels.url();
    let prefix = unique_prefix();
    let node = Node::start(&url, &prefix, Duration::from_secs(10)).await;
    let first = sentinels.primary_port();
    let mut acknowledged = Vec::new();
    let start = node.hub().publish("fo", Event::new("e0")).await.unwrap();
    acknowledged.push("e0".to_owned());
    // Wait until the replica has e0, so the failover loses nothing.
    let replica = &sentinels.servers()[1];
    eventually("the replica has e0", || {
        replica.cli(&["exists", &format!("{prefix}:{{fo}}:l")]) == "1"
    })
    .await;
    let reply = sentinels.sentinels()[0].cli(&["sentinel", "failover", RedisSentinels::NAME]);
    assert_eq!(reply, "OK");
    let started = Instant::now();
    let mut n = 1;
    while started.elapsed() < PATIENCE * 2 {
        if node
            .hub()
            .publish("fo", Event::new(format!("e{n}")))
            .await
            .is_ok()
        {
            acknowledged.push(format!("e{n}"));
            if sentinels.primary_port() != first {
                break;
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(sentinels.primary_port(), first, "no failover happened");
    // Publishes work on the new primary.
    let timing = (
        started,
        Instant::now() + PATIENCE,
        Duration::from_millis(50),
    );
    let resumed = publish_once_resumed(node.hub(), "fo", "last", timing, String::new).await;
    acknowledged.push("last".to_owned());
    println!("publishes resumed {resumed:?} after SENTINEL FAILOVER");
    assert_every_acknowledged_event(node.server.addr, "fo", start, &acknowledged).await;
}

/// `CLUSTER FAILOVER` on every replica of a Cluster while a client follows
/// an id with its cursor and a poll is parked on another node: publishes
/// resume by themselves, the parked poll is woken, and every acknowledged
/// event reaches the cursor client in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_wake_ups_resume_after_a_cluster_failover() {
    let cluster = RedisCluster::start(3, 1).await;
    let url = cluster.url();
    let prefix = unique_prefix();
    let start_node = |timeout| {
        let (url, prefix) = (url.clone(), prefix.clone());
        async move {
            let store = RedisStore::builder(&url)
                .prefix(&prefix)
                .probe_interval(Duration::from_millis(500))
                .connect()
                .await
                .unwrap();
            let layer = LongPollLayer::builder(Hub::builder().store(store.clone()).build())
                .route("/poll/{client}")
                .timeout(timeout)
                .jitter(0.0)
                .build();
            Node {
                server: TestServer::start(layer).await,
                store,
            }
        }
    };
    let a = start_node(Duration::from_secs(30)).await;
    let b = start_node(Duration::from_secs(30)).await;
    let start = b.hub().publish("cf", Event::new("e0")).await.unwrap();
    let mut acknowledged = vec!["e0".to_owned()];
    let mut parked = Conn::connect(a.server.addr).await;
    parked
        .send("GET", &format!("/poll/cf?since={start}"), &[])
        .await;
    a.server.parked(1).await;
    eventually("A subscribed", || a.store.subscribed_ids() == 1).await;

    cluster.fail_over_every_replica().await;
    let started = Instant::now();
    let timing = (started, started + PATIENCE * 2, Duration::from_millis(50));
    let resumed = publish_once_resumed(b.hub(), "cf", "after", timing, String::new).await;
    acknowledged.push("after".to_owned());
    println!("publishes resumed {resumed:?} after CLUSTER FAILOVER");
    let woken = within(
        "the poll parked across the failover",
        parked.response(false),
    )
    .await;
    assert_eq!(woken.text(), "after");
    println!("the parked poll was woken {:?} after", started.elapsed());
    assert_every_acknowledged_event(a.server.addr, "cf", start, &acknowledged).await;
}

/// `kill -9` of the Cluster primary that holds an id: its replica takes
/// over after the node timeout, publishes resume by themselves, and the
/// cursor client misses nothing silently (replication is asynchronous, so
/// an event acknowledged just before the kill may be gone; its cursor would
/// get the gap flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_resume_after_a_cluster_primary_is_killed() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let url = cluster.url();
    let prefix = unique_prefix();
    let node = Node::start(&url, &prefix, Duration::from_secs(30)).await;
    let start = node.hub().publish("kf", Event::new("e0")).await.unwrap();
    let victim = cluster.primary_of(&format!("{prefix}:{{kf}}:l"));
    // Let the replica have e0 before the kill.
    let replica = cluster
        .nodes()
        .iter()
        .find(|server| {
            let role = server.cli(&["role"]);
            role.starts_with("slave") && role.contains(&victim.to_string())
        })
        .map(|server| server.port())
        .expect("the victim's replica");
    let written = redis::replication_offset(victim);
    eventually("the replica has e0", || {
        redis::replication_offset(replica) >= written
    })
    .await;
    let killed = cluster
        .nodes_mut()
        .iter_mut()
        .find(|server| server.port() == victim)
        .unwrap();
    killed.kill().await;
    let started = Instant::now();
    let timing = (started, started + PATIENCE * 3, Duration::from_millis(100));
    let resumed = publish_once_resumed(node.hub(), "kf", "after", timing, || {
        format!(
            "; the cluster says {}",
            redis::cli(replica, &["cluster", "nodes"])
        )
    })
    .await;
    let acknowledged = ["e0".to_owned(), "after".to_owned()];
    println!("publishes resumed {resumed:?} after kill -9 of a primary");
    assert_every_acknowledged_event(node.server.addr, "kf", start, &acknowledged).await;
}

/// Resharding moves an id's slot to another primary while a poll for it is
/// parked on node A: Redis drops the sharded subscriptions of that slot.
/// Node A sees the slot map change at its next probe, subscribes again on
/// the new owner and wakes its waiters, so node B's next publish reaches
/// the parked poll within the probe interval + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_follow_a_slot_moved_by_resharding() {
    let cluster = RedisCluster::start(3, 0).await;
    let url = cluster.url();
    let prefix = unique_prefix();
    let probe = Duration::from_millis(500);
    let start_node = |url: String, prefix: String| async move {
        let store = RedisStore::builder(&url)
            .prefix(&prefix)
            .probe_interval(probe)
            .connect()
            .await
            .unwrap();
        let layer = LongPollLayer::builder(Hub::builder().store(store.clone()).build())
            .route("/poll/{client}")
            .timeout(Duration::from_secs(30))
            .jitter(0.0)
            .build();
        Node {
            server: TestServer::start(layer).await,
            store,
        }
    };
    let a = start_node(url.clone(), prefix.clone()).await;
    let b = start_node(url.clone(), prefix.clone()).await;
    let start = b.hub().publish("rs", Event::new("e0")).await.unwrap();
    let mut parked = Conn::connect(a.server.addr).await;
    parked
        .send("GET", &format!("/poll/rs?since={start}"), &[])
        .await;
    a.server.parked(1).await;
    eventually("A subscribed", || a.store.subscribed_ids() == 1).await;

    // Move the slot by hand, keys and all.
    let key = format!("{prefix}:{{rs}}:l");
    let source = cluster.primary_of(&key);
    let target = cluster
        .nodes()
        .iter()
        .map(|node| node.port())
        .find(|port| *port != source)
        .unwrap();
    let slot = redis::cli(source, &["cluster", "keyslot", &key]);
    let source_id = redis::cli(source, &["cluster", "myid"]);
    let target_id = redis::cli(target, &["cluster", "myid"]);
    assert_eq!(
        redis::cli(
            target,
            &["cluster", "setslot", &slot, "importing", &source_id]
        ),
        "OK"
    );
    assert_eq!(
        redis::cli(
            source,
            &["cluster", "setslot", &slot, "migrating", &target_id]
        ),
        "OK"
    );
    let keys = redis::cli(source, &["cluster", "getkeysinslot", &slot, "100"]);
    for key in keys.lines().filter(|key| !key.is_empty()) {
        let moved = redis::cli(
            source,
            &[
                "migrate",
                "127.0.0.1",
                &target.to_string(),
                key,
                "0",
                "5000",
            ],
        );
        assert_eq!(moved, "OK", "MIGRATE {key}");
    }
    for node in cluster.nodes() {
        assert_eq!(
            node.cli(&["cluster", "setslot", &slot, "node", &target_id]),
            "OK"
        );
    }
    assert_eq!(cluster.primary_of(&key), target);

    // The first append to the moved slot gets `MOVED`: the store sends it
    // again to the new owner (its attempt token makes a resend harmless),
    // so the publish succeeds at once.
    b.hub()
        .publish("rs", Event::new("moved"))
        .await
        .expect("the publish right after the move");
    let published = Instant::now();
    let woken = tokio::time::timeout(probe + Duration::from_secs(1), parked.response(false))
        .await
        .expect("the parked poll was not woken within the probe interval + 1 s");
    println!(
        "woken {:?} after the publish on the moved slot",
        published.elapsed()
    );
    assert_eq!(woken.text(), "moved");
}

/// The demo with `--redis-wait-replicas 1`: on a primary without a replica
/// a publish is answered `503` (its event appended, not acknowledged); once
/// a replica has attached, the retry with the same idempotency key is
/// acknowledged with the first cursor, and the event is kept once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_acknowledges_only_what_the_replicas_have_when_asked() {
    let primary = redis::RedisServer::start(&["--repl-diskless-sync-delay", "0"]).await;
    let prefix = unique_prefix();
    let demo = Example::start(
        "demo",
        &[
            "--redis",
            &primary.url(),
            "--redis-prefix",
            &prefix,
            "--redis-wait-replicas",
            "1",
        ],
    )
    .await;
    let mut publish = Conn::connect(demo.addr).await;
    publish
        .send_with_body("POST", "/publish/wr", &[("idempotency-key", "k1")], b"one")
        .await;
    let refused = publish.response(false).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);

    let port = primary.port().to_string();
    let replica = redis::RedisServer::start(&["--replicaof", "127.0.0.1", &port]).await;
    eventually("the replica in sync", || {
        replica
            .cli(&["info", "replication"])
            .contains("master_link_status:up")
    })
    .await;
    publish
        .send_with_body("POST", "/publish/wr", &[("idempotency-key", "k1")], b"one")
        .await;
    let accepted = publish.response(false).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let (seen, _) = drain(demo.addr, "wr", "0".to_owned()).await;
    assert_eq!(seen, ["one"], "kept once");
    let key = format!("{prefix}:{{wr}}:l");
    assert_eq!(replica.cli(&["llen", &key]), "1", "the replica has it");
    assert_eq!(demo.terminate().await.code(), Some(0));
}
