//! Chaos: 2,000 clients polling with cursors while they disconnect in every
//! way (FIN, RST, in the middle of a response), pause and come back, and
//! publishers send every id a numbered sequence at a steady rate. At the end
//! every client has every event of its id, in order, none twice, and no
//! waiter is left parked. Run on the in-memory store and on Redis.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Conn, TestServer, eventually};
use http::StatusCode;
use tower_longpoll::{Event, Hub, LongPollLayer};

const CLIENTS: usize = 2_000;
/// Events per id: published one round per `ROUND` over all ids.
const EVENTS: u32 = 12;
const ROUND: Duration = Duration::from_millis(1_000);
/// Every client must be done by then.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    polls: AtomicU64,
    fins: AtomicU64,
    resets: AtomicU64,
    mid_response_resets: AtomicU64,
    keepalives: AtomicU64,
    refused: AtomicU64,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// One client: polls its id with its cursor until it has all `EVENTS`,
/// misbehaving at random; returns the bodies it accepted, in order.
async fn client(addr: std::net::SocketAddr, id: String, tally: Arc<Tally>) -> Vec<u32> {
    let mut received = Vec::new();
    // `0` from the very first poll: a client that keeps cursors loses
    // nothing even when its first response is lost.
    let mut cursor = "0".to_owned();
    let mut conn: Option<Conn> = None;
    while received.len() < EVENTS as usize {
        let mut live = match conn.take() {
            Some(conn) => conn,
            None => Conn::connect(addr).await,
        };
        live.send("GET", &format!("/poll/{id}?since={cursor}"), &[])
            .await;
        tally.polls.fetch_add(1, Ordering::Relaxed);
        let roll = fastrand::u32(0..100);
        let reply = match roll {
            // Half-close at once, but read whatever still comes.
            0..=7 => {
                tally.fins.fetch_add(1, Ordering::Relaxed);
                live.fin().await;
                live.read_response(false).await
            }
            // Abort the connection while it is parked (or not yet).
            8..=15 => {
                tally.resets.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
                live.reset();
                None
            }
            // Wait for the response to start, then abort mid-way.
            16..=21 => {
                tally.mid_response_resets.fetch_add(1, Ordering::Relaxed);
                live.read_some().await;
                live.reset();
                None
            }
            _ => {
                let reply = live.read_response(false).await;
                if reply.is_some() {
                    conn = Some(live);
                }
                reply
            }
        };
        match reply {
            Some(reply) if reply.status == StatusCode::OK => {
                let value: u32 = reply.text().parse().unwrap();
                assert_eq!(
                    reply.header("longpoll-gap"),
                    None,
                    "{id}: the log keeps every event here"
                );
                received.push(value);
                cursor = reply.cursor();
            }
            Some(reply) if reply.status == StatusCode::NO_CONTENT => {
                tally.keepalives.fetch_add(1, Ordering::Relaxed);
                // The keepalive gives back the client's cursor (or, for `0`,
                // the id's start).
                if cursor == "0" {
                    cursor = reply.cursor();
                } else {
                    assert_eq!(reply.cursor(), cursor, "{id}");
                }
            }
            Some(reply) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                panic!("{id}: unexpected {} {}", reply.status, reply.text());
            }
            None => {}
        }
        if fastrand::u32(0..100) < 20 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        }
    }
    received
}

async fn run_chaos(hub: Hub, label: &str) {
    let layer = LongPollLayer::builder()
        .hub(hub.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_millis(700))
        .jitter(0.3)
        .build();
    let server = TestServer::start(layer).await;
    let addr = server.addr;
    let tally = Arc::new(Tally::default());
    let rss_before = rss_bytes();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(addr, format!("c{n}"), Arc::clone(&tally))))
        .collect();
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(ROUND / CLIENTS as u32 * 16);
            for round in 0..EVENTS {
                for batch in (0..CLIENTS).collect::<Vec<_>>().chunks(16) {
                    ticks.tick().await;
                    for n in batch {
                        hub.publish(format!("c{n}"), Event::new(round.to_string()))
                            .await
                            .unwrap();
                    }
                }
            }
        })
    };

    let results = tokio::time::timeout(DEADLINE, async {
        publisher.await.unwrap();
        let mut results = Vec::with_capacity(CLIENTS);
        for client in clients {
            results.push(client.await.unwrap());
        }
        results
    })
    .await
    .unwrap_or_else(|_| panic!("{label}: the clients did not all finish within {DEADLINE:?}"));

    let expected: Vec<u32> = (0..EVENTS).collect();
    for (n, received) in results.iter().enumerate() {
        assert_eq!(
            received, &expected,
            "{label}: client c{n} got its events out of order, twice or not at all"
        );
    }
    eventually(format!("{label}: no waiter left"), || {
        hub.stats().parked == 0
    })
    .await;
    let stats = hub.stats();
    let rss_after = rss_bytes();
    println!(
        "{label}: {} polls, {} FIN, {} RST, {} RST mid-response, {} keepalives, {} refused; \
         delivered {}, cancelled {}; RSS {} MiB -> {} MiB",
        tally.polls.load(Ordering::Relaxed),
        tally.fins.load(Ordering::Relaxed),
        tally.resets.load(Ordering::Relaxed),
        tally.mid_response_resets.load(Ordering::Relaxed),
        tally.keepalives.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        stats.delivered,
        stats.cancelled,
        rss_before >> 20,
        rss_after >> 20,
    );
    assert_eq!(stats.published, u64::from(EVENTS) * CLIENTS as u64);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_memory_store() {
    run_chaos(Hub::new(), "memory").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let store = tower_longpoll::store::RedisStore::builder(url)
        .prefix(format!("lp-chaos-{:016x}", fastrand::u64(..)))
        .connect()
        .await
        .unwrap();
    run_chaos(Hub::builder().store(store).build(), "redis").await;
}
