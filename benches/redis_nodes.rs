//! Figures for docs/scaling.md: the Redis store's publish rate, the latency
//! of a wake-up across nodes, what an idle node pays for publishes, and the
//! Redis CPU a publish costs with 0, 1 and 10,000 polls parked on its id on
//! another node — on one Redis and on a Redis Cluster (3 primaries, 1
//! replica each).
//!
//! ```text
//! cargo bench --features redis --bench redis_nodes                 # both
//! cargo bench --features redis --bench redis_nodes -- standalone   # one Redis only
//! cargo bench --features redis --bench redis_nodes -- cluster      # the Cluster only
//! ```
//!
//! Every Redis is a `redis-server` the bench starts itself (free loopback
//! ports, stopped by PID; `REDIS_SERVER_BIN`, `REDIS_CLI_BIN` name other
//! binaries), so that no other client's commands count in its CPU figures.
//! Prints one JSON line per figure, each naming its topology. Bounded: a few
//! thousand publishes, 500 wake-up rounds and a few hundred measured
//! publishes per topology, all on loopback.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::Config;
use fred::types::{ClusterHash, CustomCommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use longpoll_test_support::redis::{RedisCluster, RedisServer, cli};
use longpoll_test_support::{PATIENCE, eventually};
use tokio::task::JoinSet;
use tower_longpoll::store::{ReadFrom, RedisStore};
use tower_longpoll::{Event, Hub, LongPollLayer, WaitLimits};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

async fn hub(url: &str, prefix: &str) -> (Hub, RedisStore) {
    let store = RedisStore::builder(url)
        .prefix(prefix)
        // Keys are counted (a SCAN over every key, on every primary) once
        // an hour rather than every 10 s, so that no count falls into a
        // measured publish.
        .stats_interval(Duration::from_secs(3600))
        .connect()
        .await
        .expect("the bench's own Redis");
    (Hub::builder().store(store.clone()).build(), store)
}

/// The Redis the figures are measured on, started by the bench.
struct Topology {
    /// `standalone` or `cluster-3x1`: every JSON line names it.
    name: &'static str,
    url: String,
    primaries: Vec<u16>,
    replicas: Vec<u16>,
    // Held for their processes, which stop when they are dropped.
    _standalone: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Topology {
    async fn standalone() -> Topology {
        let server = RedisServer::start(&[]).await;
        Topology {
            name: "standalone",
            url: server.url(),
            primaries: vec![server.port()],
            replicas: Vec::new(),
            _standalone: Some(server),
            _cluster: None,
        }
    }

    async fn cluster() -> Topology {
        let cluster = RedisCluster::start(3, 1).await;
        let (mut primaries, mut replicas) = (Vec::new(), Vec::new());
        for node in cluster.nodes() {
            if cli(node.port(), &["info", "replication"]).contains("role:master") {
                primaries.push(node.port());
            } else {
                replicas.push(node.port());
            }
        }
        assert_eq!((primaries.len(), replicas.len()), (3, 3));
        Topology {
            name: "cluster-3x1",
            url: cluster.url(),
            primaries,
            replicas,
            _standalone: None,
            _cluster: Some(cluster),
        }
    }
}

/// What Redis has done so far, summed over a group of servers.
#[derive(Clone, Copy, Default)]
struct Counters {
    /// `used_cpu_sys + used_cpu_user`, in seconds.
    cpu: f64,
    /// Scripts run (`EVALSHA` and `EVAL` calls).
    scripts: u64,
    /// Microseconds Redis spent running them, by its own clock.
    script_us: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;

    fn sub(self, earlier: Counters) -> Counters {
        Counters {
            cpu: self.cpu - earlier.cpu,
            scripts: self.scripts - earlier.scripts,
            script_us: self.script_us - earlier.script_us,
        }
    }
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        self.cpu += other.cpu;
        self.scripts += other.scripts;
        self.script_us += other.script_us;
    }
}

/// The primaries' and the replicas' counters at one moment.
#[derive(Clone, Copy, Default)]
struct Sample {
    primaries: Counters,
    replicas: Counters,
}

impl std::ops::Sub for Sample {
    type Output = Sample;

    fn sub(self, earlier: Sample) -> Sample {
        Sample {
            primaries: self.primaries - earlier.primaries,
            replicas: self.replicas - earlier.replicas,
        }
    }
}

impl std::ops::AddAssign for Sample {
    fn add_assign(&mut self, other: Sample) {
        self.primaries += other.primaries;
        self.replicas += other.replicas;
    }
}

/// A connection of its own to every server, for `INFO`: one already open
/// costs Redis a command per sample, not a connection.
struct Meters {
    primaries: Vec<Client>,
    replicas: Vec<Client>,
}

impl Meters {
    async fn connect(topology: &Topology) -> Meters {
        async fn clients(ports: &[u16]) -> Vec<Client> {
            let mut clients = Vec::new();
            for port in ports {
                let config = Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
                let client = fred::types::Builder::from_config(config)
                    // No sample waits forever on a Redis that stopped answering.
                    .with_performance_config(|performance| {
                        performance.default_command_timeout = PATIENCE;
                    })
                    .build()
                    .unwrap();
                client.init().await.unwrap();
                clients.push(client);
            }
            clients
        }
        Meters {
            primaries: clients(&topology.primaries).await,
            replicas: clients(&topology.replicas).await,
        }
    }

    async fn sample(&self) -> Sample {
        async fn sum(clients: &[Client]) -> Counters {
            let mut sum = Counters::default();
            for client in clients {
                let info: String = client
                    .custom(
                        CustomCommand::new_static("INFO", ClusterHash::FirstKey, false),
                        vec!["cpu", "commandstats"],
                    )
                    .await
                    .unwrap();
                sum += parse_info(&info);
            }
            sum
        }
        Sample {
            primaries: sum(&self.primaries).await,
            replicas: sum(&self.replicas).await,
        }
    }
}

fn parse_info(info: &str) -> Counters {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
    };
    let seconds = |name: &str| -> f64 {
        field(name)
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in INFO"))
    };
    // `cmdstat_evalsha:calls=12,usec=345,...`; absent until the first call.
    let stat = |name: &str, what: &str| -> u64 {
        field(name)
            .and_then(|stats| stats.split(',').find_map(|kv| kv.strip_prefix(what)))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    let scripts = |what: &str| stat("cmdstat_evalsha", what) + stat("cmdstat_eval", what);
    Counters {
        cpu: seconds("used_cpu_sys") + seconds("used_cpu_user"),
        scripts: scripts("calls="),
        script_us: scripts("usec="),
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a bare word picks one topology.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|only| only == name);
    println!(
        r#"{{"redis_server":{:?}}}"#,
        String::from_utf8_lossy(
            &std::process::Command::new(longpoll_test_support::redis::server_binary())
                .arg("--version")
                .output()
                .expect("redis-server --version")
                .stdout
        )
        .trim()
    );
    if wanted("standalone") {
        let topology = Topology::standalone().await;
        nodes(&topology).await;
        redis_cpu(&topology).await;
    }
    if wanted("cluster") {
        let topology = Topology::cluster().await;
        nodes(&topology).await;
        redis_cpu(&topology).await;
    }
}

/// Publish rates, a cross-node wake-up, and what an idle node receives.
async fn nodes(topology: &Topology) {
    let url = topology.url.as_str();
    let name = topology.name;
    let prefix = format!("lp-bench-{:016x}", fastrand::u64(..));
    let clustered = !topology.replicas.is_empty();

    // What a node subscribed to every wake-up (PSUBSCRIBE) would receive.
    // A Cluster's wake-ups are sharded messages (SPUBLISH), which pattern
    // subscriptions do not receive: no observer there.
    let observer = if clustered {
        None
    } else {
        let observer = fred::types::Builder::from_config(Config::from_url(url).unwrap())
            .build_subscriber_client()
            .unwrap();
        observer.init().await.unwrap();
        observer
            .psubscribe(format!("{prefix}:{{*}}:w"))
            .await
            .unwrap();
        Some(observer)
    };
    let pattern_messages = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(observer) = &observer {
        let counter = pattern_messages.clone();
        let mut rx = observer.message_rx();
        tokio::spawn(async move {
            loop {
                let received = match rx.recv().await {
                    Ok(_) => 1,
                    // Dropped by the local buffer, but Redis sent them all.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => missed,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                counter.fetch_add(received, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }

    let (publisher, _) = hub(url, &prefix).await;
    let (idle_hub, idle_store) = hub(url, &prefix).await;
    let body = Bytes::from(vec![b'x'; 200]);

    // 1. Publishes one after another, to 100 ids.
    const SEQUENTIAL: usize = 5_000;
    let started = Instant::now();
    for n in 0..SEQUENTIAL {
        publisher
            .publish(format!("id-{}", n % 100), Event::new(body.clone()))
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        r#"{{"topology":"{name}","figure":"publish_sequential","publishes":{SEQUENTIAL},"us_per_publish":{:.1},"per_second":{:.0}}}"#,
        elapsed.as_secs_f64() * 1e6 / SEQUENTIAL as f64,
        SEQUENTIAL as f64 / elapsed.as_secs_f64()
    );

    // 2. Publishes from 32 concurrent tasks.
    const TASKS: usize = 32;
    const EACH: usize = 500;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let publisher = publisher.clone();
            let body = body.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    publisher
                        .publish(
                            format!("id-{}", (task * EACH + n) % 1000),
                            Event::new(body.clone()),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        r#"{{"topology":"{name}","figure":"publish_concurrent","tasks":{TASKS},"publishes":{},"per_second":{:.0}}}"#,
        TASKS * EACH,
        (TASKS * EACH) as f64 / elapsed.as_secs_f64()
    );

    // 3. A poll parked on node A, answered by a publish on node B.
    let (node_a, _) = hub(url, &prefix).await;
    let layer = LongPollLayer::builder(node_a.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().layer(layer))
            .await
            .unwrap();
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    const ROUNDS: usize = 500;
    let mut latencies = Vec::with_capacity(ROUNDS);
    let mut cursor = String::new();
    for round in 0..ROUNDS {
        let request = http::Request::get(format!("http://{addr}/poll/wake?since={cursor}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request);
        let mut response = std::pin::pin!(response);
        // Drive the request until node A has parked it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while node_a.stats().parked == 0 {
            assert!(Instant::now() < deadline, "the poll never parked");
            tokio::select! {
                biased;
                answer = &mut response => {
                    let answer = answer.unwrap();
                    panic!("round {round}: answered before the publish: {} {:?}", answer.status(), answer.into_body().collect().await.unwrap().to_bytes())
                }
                _ = tokio::task::yield_now() => {}
            }
        }
        let started = Instant::now();
        publisher
            .publish("wake", Event::new(format!("{round}")))
            .await
            .unwrap();
        let response = response.await.unwrap();
        latencies.push(started.elapsed());
        cursor = response.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .to_owned();
        response.into_body().collect().await.unwrap();
    }
    latencies.sort();
    println!(
        r#"{{"topology":"{name}","figure":"cross_node_wake","rounds":{ROUNDS},"p50_ms":{:.3},"p99_ms":{:.3},"max_ms":{:.3}}}"#,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );

    // 4. What the idle node and a pattern subscriber received meanwhile
    // (each node also publishes and receives its own heartbeats, which
    // are not counted).
    let published = publisher.stats().published;
    let pattern = match &observer {
        Some(_) => {
            // Every message Redis sent the observer, within a deadline.
            let deadline = Instant::now() + PATIENCE;
            while pattern_messages.load(std::sync::atomic::Ordering::Relaxed) < published
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            pattern_messages
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string()
        }
        None => "null".to_owned(),
    };
    println!(
        r#"{{"topology":"{name}","figure":"idle_node_wakeups","publishes":{published},"per_id_subscriptions":{},"pattern_subscription":{pattern}}}"#,
        idle_store.wakeups_received(),
    );

    // Nothing of these nodes is left to add commands to the CPU figures.
    if let Some(observer) = observer {
        let _ = observer.quit().await;
    }
    drop(sender);
    server.abort();
    let _ = server.await;
    drop((publisher, idle_hub, idle_store, node_a));
}

/// Redis CPU per publish to an id with `parked` polls parked on it on
/// another node, each publish waking them all.
///
/// Each measured publish is bracketed by `INFO cpu commandstats` on every
/// server: after the polls are parked and their reads have run in Redis,
/// and after every poll has been answered. Between rounds the polls park
/// again with the new cursor, outside the bracket (that cost is reported
/// apart: a client re-polls after each event). The net figure takes off
/// what an empty bracket costs (the `INFO` commands themselves) and what
/// Redis spends idle (its timers, the nodes' heartbeats) for the rest of
/// the bracket's duration.
async fn redis_cpu(topology: &Topology) {
    let name = topology.name;
    let prefix = format!("lp-bench-cpu-{:016x}", fastrand::u64(..));
    let (publisher, _) = hub(&topology.url, &prefix).await;
    let (waiter, waiter_store) = hub(&topology.url, &prefix).await;
    let meters = Meters::connect(topology).await;
    // The first `stats()` counts the keys once, here rather than in a bracket.
    let _ = (publisher.stats(), waiter.stats());
    let body = Bytes::from(vec![b'x'; 200]);

    // What Redis spends with nothing to do but the nodes' heartbeats.
    const IDLE: Duration = Duration::from_secs(2);
    let before = meters.sample().await;
    let started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle = meters.sample().await - before;
    let idle_seconds = started.elapsed().as_secs_f64();
    let idle_rate = Sample {
        primaries: Counters {
            cpu: idle.primaries.cpu / idle_seconds,
            ..Counters::default()
        },
        replicas: Counters {
            cpu: idle.replicas.cpu / idle_seconds,
            ..Counters::default()
        },
    };

    // What a bracket with nothing in it costs: the INFO commands.
    const EMPTY: usize = 200;
    let mut empty = Sample::default();
    let mut empty_time = Duration::ZERO;
    for _ in 0..EMPTY {
        let before = meters.sample().await;
        let started = Instant::now();
        let after = meters.sample().await;
        empty_time += started.elapsed();
        empty += after - before;
    }
    println!(
        r#"{{"topology":"{name}","figure":"redis_cpu_baseline","idle_primaries_us_per_s":{:.1},"idle_replicas_us_per_s":{:.1},"empty_bracket_primaries_us":{:.1},"empty_bracket_replicas_us":{:.1}}}"#,
        idle_rate.primaries.cpu * 1e6,
        idle_rate.replicas.cpu * 1e6,
        empty.primaries.cpu * 1e6 / EMPTY as f64,
        empty.replicas.cpu * 1e6 / EMPTY as f64,
    );
    let empty_seconds = empty_time.as_secs_f64() / EMPTY as f64;
    // Net of the INFO commands, and of idle work beyond an empty bracket's length.
    let net = |raw: f64, empty_cpu: f64, idle_rate: f64, seconds: f64| {
        raw - empty_cpu - idle_rate * (seconds - empty_seconds).max(0.0)
    };

    const WARM_UP: usize = 2;
    for (parked, rounds) in [(0usize, 200usize), (1, 200), (10_000, 30)] {
        let id = format!("cpu-{parked}");
        let limits = WaitLimits::new(parked.max(1), parked.max(1) * 2);
        let mut cursor = publisher
            .publish(id.as_str(), Event::new(body.clone()))
            .await
            .unwrap();
        let mut measured = Sample::default();
        let mut repark = Sample::default();
        let mut reads = 0;
        let mut bracket_seconds = 0.0;
        let mut wakes = Vec::with_capacity(rounds);
        for round in 0..WARM_UP + rounds {
            let start = meters.sample().await;
            let reads_at_start = waiter_store.reads_sent();
            let mut waits = JoinSet::new();
            for _ in 0..parked {
                let wait = waiter.wait_for([(id.as_str(), ReadFrom::Cursor(cursor))], 1, limits);
                waits.spawn(tokio::time::timeout(PATIENCE, wait));
            }
            eventually(format!("{parked} polls parked"), || {
                waiter.stats().parked == parked
            })
            .await;
            // Parked is counted before a poll's last read; the bracket
            // starts once Redis has run every read the node sent.
            let deadline = Instant::now() + PATIENCE;
            let before = loop {
                let now = meters.sample().await;
                let sent = waiter_store.reads_sent() - reads_at_start;
                if (now.primaries.scripts - start.primaries.scripts) >= sent {
                    break now;
                }
                assert!(Instant::now() < deadline, "the parking reads never ran");
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let reads_before = waiter_store.reads_sent();
            let started = Instant::now();
            cursor = publisher
                .publish(id.as_str(), Event::new(body.clone()))
                .await
                .unwrap();
            while let Some(answered) = waits.join_next().await {
                let (_, read) = answered
                    .unwrap()
                    .expect("answered within PATIENCE")
                    .expect("events");
                assert_eq!(read.events()[0].cursor, cursor);
            }
            let woken = started.elapsed();
            let after = meters.sample().await;
            let bracket = started.elapsed();
            if round < WARM_UP {
                continue;
            }
            bracket_seconds += bracket.as_secs_f64();
            wakes.push(woken);
            measured += after - before;
            repark += before - start;
            reads += waiter_store.reads_sent() - reads_before;
        }
        wakes.sort();
        let per = |value: f64| value / rounds as f64;
        let seconds = per(bracket_seconds);
        let replicas_us = if topology.replicas.is_empty() {
            "null".to_owned()
        } else {
            format!(
                "{:.1}",
                net(
                    per(measured.replicas.cpu),
                    per(empty.replicas.cpu),
                    idle_rate.replicas.cpu,
                    seconds
                ) * 1e6
            )
        };
        println!(
            r#"{{"topology":"{name}","figure":"redis_cpu_per_publish","parked":{parked},"rounds":{rounds},"primaries_us_per_publish":{:.1},"raw_primaries_us_per_publish":{:.1},"replicas_us_per_publish":{replicas_us},"scripts_per_publish":{:.2},"script_us_per_publish":{:.1},"node_reads_per_publish":{:.2},"all_answered_p50_ms":{:.2},"all_answered_max_ms":{:.2},"repark_primaries_us":{:.1},"repark_scripts":{:.2}}}"#,
            net(
                per(measured.primaries.cpu),
                per(empty.primaries.cpu),
                idle_rate.primaries.cpu,
                seconds
            ) * 1e6,
            per(measured.primaries.cpu) * 1e6,
            per(measured.primaries.scripts as f64),
            per(measured.primaries.script_us as f64),
            per(reads as f64),
            percentile(&wakes, 0.5),
            percentile(&wakes, 1.0),
            per(repark.primaries.cpu) * 1e6,
            per(repark.primaries.scripts as f64),
        );
    }
}
