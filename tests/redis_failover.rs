//! Redis failing over while publishes run at 500 a second and more, and
//! cursor clients (the library's own `LongPollClient`) follow every id on
//! two nodes; and Redis losing its newest acknowledged writes.
//!
//! The failover tests run the store with `wait_for_replicas(1, …)` (Redis
//! `WAIT`, one replica per primary): a publish is acknowledged once the
//! replica has its event, so a failover to that replica loses no
//! acknowledged event. Each checks, for every client, that every
//! acknowledged event arrived, in publish order, none twice. A publish that
//! failed may still have been appended (and delivered): such events are
//! allowed, in order, but not required.
//!
//! Every Redis here is started by the test on free ports and stopped by its
//! PID (see `longpoll-test-support`).

#![cfg(all(feature = "redis", feature = "client"))]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::redis::{RedisCluster, RedisSentinels, RedisServer};
use support::{PATIENCE, TestServer, drain, eventually, redis};
use tokio::task::JoinHandle;
use tower_longpoll::client::LongPollClient;
use tower_longpoll::store::RedisStore;
use tower_longpoll::{Event, Hub, LongPollLayer};

/// Two ids, each with its own publisher, so that the publishes run at
/// 500 a second and more together while each id's events keep one order.
const IDS: [&str; 2] = ["load-a", "load-b"];

/// Each publisher's pace: together about 1,000 publishes a second, twice
/// what the test asserts, so a loaded machine still makes the rate.
const PACE: Duration = Duration::from_millis(2);

/// The publish rate the test asserts before the failover.
const MIN_RATE: f64 = 500.0;

/// The load tests run one at a time: on two cores, two of them side by
/// side would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unique_prefix() -> String {
    format!("lp-test-{:016x}", fastrand::u64(..))
}

/// One node: a hub on the Redis at `url` and a server with the layer.
struct Node {
    server: TestServer,
}

impl Node {
    async fn start(url: &str, prefix: &str, wait_for_replicas: bool) -> Node {
        let mut builder = RedisStore::builder(url)
            .prefix(prefix)
            .probe_interval(Duration::from_millis(500))
            // Keep every event of the run: a client that falls behind the
            // publisher catches up after it, without a gap.
            .capacity(100_000);
        if wait_for_replicas {
            builder = builder.wait_for_replicas(1, Duration::from_secs(1));
        }
        let store = builder.connect().await.unwrap();
        let layer = LongPollLayer::builder(Hub::builder().store(store).build())
            .route("/poll/{client}")
            .timeout(Duration::from_secs(5))
            .jitter(0.0)
            .build();
        Node {
            server: TestServer::start(layer).await,
        }
    }

    fn hub(&self) -> &Hub {
        &self.server.hub
    }
}

/// Publishes `e1`, `e2`, … on one id at `PACE`, keeping the numbers Redis
/// acknowledged and when.
struct Publisher {
    acknowledged: Arc<Mutex<Vec<(u64, Instant)>>>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Publisher {
    fn start(hub: Hub, id: &'static str) -> Publisher {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acknowledged, failed, stop) = (
                Arc::clone(&acknowledged),
                Arc::clone(&failed),
                Arc::clone(&stop),
            );
            async move {
                let mut pace = tokio::time::interval(PACE);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0;
                while !stop.load(SeqCst) {
                    pace.tick().await;
                    n += 1;
                    match hub.publish(id, Event::new(format!("e{n}"))).await {
                        Ok(_) => acknowledged.lock().unwrap().push((n, Instant::now())),
                        Err(_) => {
                            failed.fetch_add(1, SeqCst);
                        }
                    }
                }
            }
        });
        Publisher {
            acknowledged,
            failed,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    fn acknowledged_after(&self, instant: Instant) -> usize {
        let acknowledged = self.acknowledged.lock().unwrap();
        acknowledged.iter().filter(|(_, at)| *at > instant).count()
    }

    async fn finish(self) -> (Vec<u64>, Vec<Instant>, u64) {
        self.stop.store(true, SeqCst);
        self.task.await.unwrap();
        let acknowledged = self.acknowledged.lock().unwrap();
        let failed = self.failed.load(SeqCst);
        (
            acknowledged.iter().map(|(n, _)| *n).collect(),
            acknowledged.iter().map(|(_, at)| *at).collect(),
            failed,
        )
    }
}

/// What one cursor client received: the event numbers (`end` is
/// `u64::MAX`) and how many came with the gap flag.
struct Received {
    numbers: Vec<u64>,
    gaps: usize,
}

/// Follows `id` on `node` from `since` with the library's client until the
/// event `end`; `progress` has the last event number received and when.
fn follow(
    node: &Node,
    id: &str,
    since: String,
    progress: Arc<Mutex<(u64, Option<Instant>)>>,
) -> JoinHandle<Received> {
    let url = format!("http://{}/poll/{id}", node.server.addr);
    tokio::spawn(async move {
        let mut client = LongPollClient::builder(url)
            .since(since)
            .backoff(Duration::from_millis(20), Duration::from_millis(500))
            .build()
            .unwrap();
        let mut received = Received {
            numbers: Vec::new(),
            gaps: 0,
        };
        while let Some(event) = client.next().await {
            let event = event.expect("the client never gives up on these failures");
            received.gaps += usize::from(event.gap());
            let text = std::str::from_utf8(event.data()).unwrap().to_owned();
            if text == "end" {
                received.numbers.push(u64::MAX);
                break;
            }
            let number = text.trim_start_matches('e').parse().unwrap();
            *progress.lock().unwrap() = (number, Some(Instant::now()));
            received.numbers.push(number);
        }
        received
    })
}

/// Runs publishers on both ids and cursor clients on both nodes, calls
/// `failover` once the publishes run at `MIN_RATE` or more, and checks what
/// every client received. `lossless`: no client may see a gap (nothing was
/// lost, not even an unacknowledged event).
async fn under_load<F, Fut>(nodes: [&Node; 2], what: &str, lossless: bool, failover: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut starts = Vec::new();
    for id in IDS {
        let start = nodes[1].hub().publish(id, Event::new("e0")).await.unwrap();
        starts.push(start.to_string());
    }
    let mut clients = Vec::new();
    for (id, start) in IDS.iter().zip(&starts) {
        for node in nodes {
            let progress = Arc::new(Mutex::new((0, None)));
            let client = follow(node, id, start.clone(), Arc::clone(&progress));
            clients.push((*id, node.server.addr, progress, client));
        }
    }
    let publishers: Vec<Publisher> = IDS
        .iter()
        .zip(nodes)
        .map(|(id, node)| Publisher::start(node.hub().clone(), id))
        .collect();
    let total = |publishers: &[Publisher]| publishers.iter().map(Publisher::count).sum::<usize>();

    // The rate, over 500 acknowledged publishes after a warm-up of 100.
    eventually("100 publishes", || total(&publishers) >= 100).await;
    let (from, counted) = (Instant::now(), total(&publishers));
    eventually("600 publishes", || total(&publishers) >= 600).await;
    let rate = (total(&publishers) - counted) as f64 / from.elapsed().as_secs_f64();
    println!("{what}: {rate:.0} acknowledged publishes a second before the failover");
    assert!(
        rate >= MIN_RATE,
        "publishes ran at {rate:.0}/s, not {MIN_RATE}/s"
    );

    let started = Instant::now();
    failover().await;
    let switched = Instant::now();
    println!(
        "{what}: the failover took {:?}",
        switched.duration_since(started)
    );
    // Publishing goes on, on both ids, well after the switch.
    let deadline = Instant::now() + PATIENCE * 3;
    while publishers
        .iter()
        .any(|publisher| publisher.acknowledged_after(switched) < 200)
    {
        assert!(
            Instant::now() < deadline,
            "{what}: publishes did not resume: {:?} acknowledged since the switch",
            publishers
                .iter()
                .map(|publisher| publisher.acknowledged_after(switched))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut acknowledged = Vec::new();
    for publisher in publishers {
        let (numbers, instants, failed) = publisher.finish().await;
        let first_after = instants.iter().find(|at| **at > started);
        let resumed = first_after.map(|at| at.duration_since(started));
        let paused = instants
            .windows(2)
            .map(|pair| pair[1].duration_since(pair[0]))
            .max()
            .unwrap_or_default();
        println!(
            "{what}: {} acknowledged, {failed} failed; longest pause between two \
             acknowledged publishes {paused:?}; first acknowledged {resumed:?} after the \
             failover began",
            numbers.len()
        );
        acknowledged.push(numbers);
    }
    // The last event, acknowledged, tells the clients they have everything.
    for id in IDS {
        let deadline = Instant::now() + PATIENCE;
        while nodes[0].hub().publish(id, Event::new("end")).await.is_err() {
            assert!(Instant::now() < deadline, "{what}: `end` never published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    for (id, addr, progress, client) in clients {
        let received = tokio::time::timeout(PATIENCE * 2, client)
            .await
            .unwrap_or_else(|_| {
                let (last, at) = *progress.lock().unwrap();
                panic!(
                    "{what}: a client of {id} on {addr} never got `end`: its last event \
                     e{last} came {:?} ago",
                    at.map(|at| at.elapsed())
                )
            })
            .unwrap();
        let index = IDS.iter().position(|known| *known == id).unwrap();
        let numbers = &received.numbers;
        assert!(
            numbers.windows(2).all(|pair| pair[0] < pair[1]),
            "{what}: {id}: out of order or twice: {numbers:?}"
        );
        let missing: Vec<u64> = acknowledged[index]
            .iter()
            .filter(|n| numbers.binary_search(n).is_err())
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: {id}: acknowledged events never received: {missing:?}"
        );
        let unacknowledged = numbers.len() - 1 - acknowledged[index].len();
        println!(
            "{what}: a client of {id}: {} events, {unacknowledged} of them from publishes \
             that failed, {} with the gap flag",
            numbers.len(),
            received.gaps
        );
        if lossless {
            assert_eq!(
                received.gaps, 0,
                "{what}: {id}: a gap, yet nothing was lost"
            );
        }
    }
}

/// `SENTINEL FAILOVER` under load: the nodes find the new primary by
/// themselves (the old one answers `READONLY`), and every acknowledged event
/// reaches every client in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_sentinel_failover_under_load() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let sentinels = RedisSentinels::start().await;
    let prefix = unique_prefix();
    let a = Node::start(&sentinels.url(), &prefix, true).await;
    let b = Node::start(&sentinels.url(), &prefix, true).await;
    let first = sentinels.primary_port();
    let replica = sentinels.servers()[1].port();
    eventually("the replica in sync", || {
        redis::cli(replica, &["info", "replication"]).contains("master_link_status:up")
    })
    .await;
    under_load([&a, &b], "SENTINEL FAILOVER", false, || async {
        let reply = sentinels.sentinels()[0].cli(&["sentinel", "failover", RedisSentinels::NAME]);
        assert_eq!(reply, "OK");
        eventually("the Sentinels name a new primary", || {
            sentinels.primary_port() != first
        })
        .await;
    })
    .await;
}

/// `CLUSTER FAILOVER` on every replica of a Cluster under load: a manual
/// failover waits for the replica to catch up, so nothing at all is lost
/// and no client sees a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_survives_a_cluster_failover_under_load() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3, 1).await;
    let prefix = unique_prefix();
    let a = Node::start(&cluster.url(), &prefix, true).await;
    let b = Node::start(&cluster.url(), &prefix, true).await;
    under_load([&a, &b], "CLUSTER FAILOVER", true, || async {
        cluster.fail_over_every_replica().await;
    })
    .await;
}

/// `kill -9` of the Cluster primary that holds the first id, under load:
/// its replica takes over after the node timeout and every acknowledged
/// event reaches every client, in order, none twice. `WAIT` needs a live
/// replica, so the killed node is started again (as an operator's
/// supervisor would) and rejoins as the new primary's replica; until then
/// publishes to that id fail rather than being acknowledged unreplicated.
/// An event appended but not acknowledged when the primary died may have
/// reached a client and then been lost: that client gets the gap flag with
/// the next event, and no event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_killed_cluster_primary_under_load() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = RedisCluster::start(3, 1).await;
    let prefix = unique_prefix();
    let a = Node::start(&cluster.url(), &prefix, true).await;
    let b = Node::start(&cluster.url(), &prefix, true).await;
    let victim = cluster.primary_of(&format!("{prefix}:{{{}}}:l", IDS[0]));
    let replica = cluster.replica_of(victim);
    let cluster = &mut cluster;
    under_load(
        [&a, &b],
        "kill -9 of a Cluster primary",
        false,
        move || async move {
            let killed = cluster
                .nodes_mut()
                .iter_mut()
                .find(|server| server.port() == victim)
                .unwrap();
            killed.kill().await;
            eventually("the replica promoted", || {
                redis::cli(replica, &["role"]).starts_with("master")
            })
            .await;
            killed.run().await;
            eventually("the killed node back as a replica", || {
                let role = redis::cli(victim, &["role"]);
                role.starts_with("slave") && role.contains("connected")
            })
            .await;
        },
    )
    .await;
}

/// What a host crash leaves of a Redis with `appendfsync everysec`: its AOF
/// without the newest writes (Redis wrote them to the kernel, which had not
/// flushed them to disk yet). A `kill -9` of the process alone loses
/// nothing, the kernel still writes the file out; so the test copies the
/// AOF after e1–e3, appends e4–e5, kills Redis and puts the copy back.
/// Clients holding e4's or e5's cursor get the gap flag and then exactly
/// the events published since (they have e1–e3); a client at e3 misses
/// nothing and gets no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_everysec_crash_gives_the_lost_cursors_the_gap_flag() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "everysec"]).await;
    let prefix = unique_prefix();
    let node = Node::start(&redis.url(), &prefix, false).await;
    let mut cursors = Vec::new();
    for n in 1..=3 {
        let cursor = node.hub().publish("ev", Event::new(format!("e{n}")));
        cursors.push(cursor.await.unwrap());
    }
    let aof = redis.dir().join("appendonlydir");
    let saved = redis.dir().join("appendonlydir.crash");
    copy_dir(&aof, &saved);
    for n in 4..=5 {
        let cursor = node.hub().publish("ev", Event::new(format!("e{n}")));
        cursors.push(cursor.await.unwrap());
    }
    redis.kill().await;
    std::fs::remove_dir_all(&aof).unwrap();
    std::fs::rename(&saved, &aof).unwrap();
    redis.run().await;
    let deadline = Instant::now() + PATIENCE;
    while node.hub().publish("ev", Event::new("e6")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "Redis is back but publishing fails"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 7..=8 {
        let published = node.hub().publish("ev", Event::new(format!("e{n}")));
        published.await.unwrap();
    }
    let since_crash = ["e6", "e7", "e8"];
    for lost in [4, 3] {
        let (seen, gap) = drain(node.server.addr, "ev", cursors[lost].to_string()).await;
        assert!(gap, "e{}'s cursor: no gap flag, got {seen:?}", lost + 1);
        assert_eq!(seen, since_crash, "e{}'s cursor", lost + 1);
    }
    let (seen, gap) = drain(node.server.addr, "ev", cursors[2].to_string()).await;
    assert_eq!(seen, since_crash);
    assert!(!gap, "e3 was kept: nothing was missed");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
