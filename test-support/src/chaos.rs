//! The chaos workload: clients that poll with cursors while misbehaving in
//! every way, and publishers sending numbered sequences. Shared by the
//! chaos test and the soak tool (tools/soak).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::conn::Conn;
use crate::metrics::{eventually_metric, metric};
use crate::request;

/// What the clients did, for the report.
#[derive(Default)]
pub struct Tally {
    pub polls: AtomicU64,
    pub fins: AtomicU64,
    pub resets: AtomicU64,
    pub mid_response_resets: AtomicU64,
    pub keepalives: AtomicU64,
}

/// The resident memory of a process, from /proc.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// One client: polls its id with its cursor until it has `events` events,
/// misbehaving at random; returns the bodies it accepted, in order.
pub async fn client(addr: SocketAddr, id: String, events: u32, tally: Arc<Tally>) -> Vec<u32> {
    let mut received = Vec::new();
    // `0` from the very first poll: a client that keeps cursors loses
    // nothing even when its first response is lost.
    let mut cursor = "0".to_owned();
    let mut kept: Option<Conn> = None;
    while received.len() < events as usize {
        let mut conn = match kept.take() {
            Some(conn) => conn,
            None => Conn::connect(addr).await,
        };
        conn.send("GET", &format!("/poll/{id}?since={cursor}"), &[])
            .await;
        tally.polls.fetch_add(1, Ordering::Relaxed);
        let reply = match fastrand::u32(0..100) {
            // Half-close at once, but read whatever still comes.
            0..=7 => {
                tally.fins.fetch_add(1, Ordering::Relaxed);
                conn.fin().await;
                conn.read_response(false).await
            }
            // Abort the connection while it is parked (or not yet).
            8..=15 => {
                tally.resets.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
                conn.reset();
                None
            }
            // Wait for the response to start, then abort mid-way.
            16..=21 => {
                tally.mid_response_resets.fetch_add(1, Ordering::Relaxed);
                conn.read_some().await;
                conn.reset();
                None
            }
            _ => {
                let reply = conn.read_response(false).await;
                if reply.is_some() {
                    kept = Some(conn);
                }
                reply
            }
        };
        match reply {
            Some(reply) if reply.status == StatusCode::OK => {
                assert_eq!(
                    reply.header("longpoll-gap"),
                    None,
                    "{id}: the log keeps every event here"
                );
                received.push(reply.text().parse().unwrap());
                cursor = reply.cursor();
            }
            Some(reply) if reply.status == StatusCode::NO_CONTENT => {
                tally.keepalives.fetch_add(1, Ordering::Relaxed);
                // The keepalive gives back the client's cursor (or, for `0`,
                // the id's start).
                if cursor != "0" {
                    assert_eq!(reply.cursor(), cursor, "{id}");
                }
                cursor = reply.cursor();
            }
            Some(reply) => panic!("{id}: unexpected {} {}", reply.status, reply.text()),
            None => {}
        }
        if fastrand::u32(0..100) < 20 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        }
    }
    received
}

/// Publishes `0..events` to every id over a few keep-alive connections, one
/// round of all ids per `round`.
pub async fn publish_all(addr: SocketAddr, ids: Arc<Vec<String>>, events: u32, round: Duration) {
    const CONNECTIONS: usize = 8;
    let publishers: Vec<_> = (0..CONNECTIONS)
        .map(|lane| {
            let ids = Arc::clone(&ids);
            tokio::spawn(async move {
                let mine: Vec<&String> = ids.iter().skip(lane).step_by(CONNECTIONS).collect();
                let mut conn = Conn::connect(addr).await;
                let mut ticks = tokio::time::interval(round / mine.len().max(1) as u32);
                for round in 0..events {
                    for id in &mine {
                        ticks.tick().await;
                        conn.send_with_body(
                            "POST",
                            &format!("/publish/{id}"),
                            &[],
                            round.to_string().as_bytes(),
                        )
                        .await;
                        let reply = conn.response(false).await;
                        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
}

pub const CLIENTS: usize = 2_000;
/// Events per id in each phase: a warm-up of the same size, then the measured one.
pub const EVENTS: u32 = 6;
const WARM_UP_EVENTS: u32 = EVENTS;
/// One event for every id per round.
const ROUND: Duration = Duration::from_millis(1_000);
/// Every client must be done by then, per phase.
const DEADLINE: Duration = Duration::from_secs(90);
/// The server may hold this much more after the measured phase than after
/// the warm-up (allocator slack), and no more.
pub const RSS_SLACK: u64 = 32 << 20;

/// Where polls go, where publishes go, and which process to measure.
pub struct Target {
    /// Where the clients poll.
    pub polls: SocketAddr,
    /// Where the events are published.
    pub publishes: SocketAddr,
    /// The server process, whose memory is read from /proc.
    pub pid: u32,
}

/// One phase: every client of `prefix` gets `events` events, in order.
async fn phase(target: &Target, prefix: &str, events: u32, label: &str) {
    let tally = Arc::new(Tally::default());
    let ids: Arc<Vec<String>> = Arc::new((0..CLIENTS).map(|n| format!("{prefix}{n}")).collect());
    let clients: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(client(target.polls, id.clone(), events, Arc::clone(&tally))))
        .collect();
    let publisher = tokio::spawn(publish_all(
        target.publishes,
        Arc::clone(&ids),
        events,
        ROUND,
    ));
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
    let expected: Vec<u32> = (0..events).collect();
    for (id, received) in ids.iter().zip(&results) {
        assert_eq!(
            received, &expected,
            "{label}: {id} got its events out of order, twice or not at all"
        );
    }
    println!(
        "{label}: {} polls, {} FIN, {} RST, {} RST mid-response, {} keepalives",
        tally.polls.load(Ordering::Relaxed),
        tally.fins.load(Ordering::Relaxed),
        tally.resets.load(Ordering::Relaxed),
        tally.mid_response_resets.load(Ordering::Relaxed),
        tally.keepalives.load(Ordering::Relaxed),
    );
}

/// A warm-up phase, then the measured one: every client gets every event of
/// its id in order, none twice, no waiter is left parked (read from
/// `GET /metrics` at `metrics`), and the server's RSS stays within
/// [`RSS_SLACK`] (or a quarter) of where it stood after the warm-up.
pub async fn run(target: Target, metrics: SocketAddr, label: &str) {
    phase(
        &target,
        "warm-",
        WARM_UP_EVENTS,
        &format!("{label} warm-up"),
    )
    .await;
    eventually_metric(metrics, "longpoll_waiters", 0).await;
    let rss_warm = rss_of(target.pid);

    phase(&target, "c", EVENTS, label).await;
    eventually_metric(metrics, "longpoll_waiters", 0).await;
    let rss_after = rss_of(target.pid);
    let text = request(metrics, "GET", "/metrics", &[]).await;
    println!(
        "{label}: server RSS {} MiB after the warm-up, {} MiB after the measured phase; {} deliveries, {} cancellations",
        rss_warm >> 20,
        rss_after >> 20,
        metric(text.text(), "longpoll_deliveries_total"),
        metric(text.text(), "longpoll_cancellations_total"),
    );
    assert!(
        rss_after <= rss_warm + RSS_SLACK.max(rss_warm / 4),
        "{label}: the server grew from {} to {} MiB",
        rss_warm >> 20,
        rss_after >> 20
    );
}
