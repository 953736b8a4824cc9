//! Chaos: 2,000 clients polling with cursors while they disconnect in every
//! way (FIN, RST, in the middle of a response), pause and come back, and
//! publishers send every id a numbered sequence at a steady rate with a
//! short poll timeout. At the end every client has every event of its id,
//! in order, none twice, no waiter is left parked, and the server's memory
//! is back near where it stood after a warm-up round.
//!
//! The server is a real process: the demo (in memory, then on Redis) and the
//! gateway; its RSS is read from /proc. The runs take turns, so that each
//! has the machine to itself.

mod common;
#[cfg(feature = "gateway")]
#[path = "support/gateway.rs"]
mod gateway_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::chaos::{Tally, client, publish_all, rss_of};
use common::example::{Example, eventually_metric, metric};
use common::request;

const CLIENTS: usize = 2_000;
/// Events per id in each phase: a warm-up of the same size, then the measured one.
const EVENTS: u32 = 6;
const WARM_UP_EVENTS: u32 = EVENTS;
/// One event for every id per round.
const ROUND: Duration = Duration::from_millis(1_000);
/// Every client must be done by then, per phase.
const DEADLINE: Duration = Duration::from_secs(90);
/// The server may hold this much more after the measured phase than after
/// the warm-up (allocator slack), and no more.
const RSS_SLACK: u64 = 32 << 20;

/// The runs take turns: each measures a process on a quiet-ish machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where polls go, where publishes go, and which process to measure.
struct Target {
    polls: SocketAddr,
    publishes: SocketAddr,
    pid: u32,
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

async fn run_chaos(target: Target, metrics: SocketAddr, label: &str) {
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

fn demo_args() -> Vec<String> {
    ["--timeout", "0.7", "--max-per-id", "4"]
        .map(String::from)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_memory_store() {
    let _turn = TURN.lock().await;
    let args = demo_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let demo = Example::start("demo", &args).await;
    let target = Target {
        polls: demo.addr,
        publishes: demo.addr,
        pid: demo.pid(),
    };
    run_chaos(target, demo.addr, "memory").await;
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_redis() {
    let _turn = TURN.lock().await;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-chaos-{:016x}", fastrand::u64(..));
    let mut args = demo_args();
    args.extend(["--redis".into(), url, "--redis-prefix".into(), prefix]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let demo = Example::start("demo", &args).await;
    let target = Target {
        polls: demo.addr,
        publishes: demo.addr,
        pid: demo.pid(),
    };
    run_chaos(target, demo.addr, "redis").await;
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[cfg(feature = "gateway")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_through_the_gateway() {
    let _turn = TURN.lock().await;
    // Route polls never reach the upstream; it only has to be a URL.
    let gateway = gateway_support::Gateway::start(
        "http://127.0.0.1:9",
        &[
            "--route",
            "/poll/{client}",
            "--timeout",
            "0.7",
            "--max-per-id",
            "4",
        ],
    )
    .await;
    let target = Target {
        polls: gateway.addr,
        publishes: gateway.publish,
        pid: gateway.pid(),
    };
    run_chaos(target, gateway.publish, "gateway").await;
    assert_eq!(gateway.terminate().await.code(), Some(0));
}
