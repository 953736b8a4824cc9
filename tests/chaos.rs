//! Chaos: 2,000 clients polling with cursors while they disconnect in every
//! way (FIN, RST, in the middle of a response), pause and come back, and
//! publishers send every id a numbered sequence at a steady rate with a
//! short poll timeout. At the end every client has every event of its id,
//! in order, none twice, no waiter is left parked, and the server's memory
//! is back near where it stood after a warm-up round.
//!
//! The server is a real process: the demo, in memory and on Redis (the
//! gateway's run is in longpoll-gateway/tests/chaos.rs; the workload is
//! `longpoll_test_support::chaos`); its RSS is read from /proc. The runs take
//! turns, so that each has the machine to itself.

mod support;

use support::chaos::{self, Target};
use support::example::Example;

/// The runs take turns: each measures a process on a quiet-ish machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    chaos::run(target, demo.addr, "memory").await;
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
    chaos::run(target, demo.addr, "redis").await;
    assert_eq!(demo.terminate().await.code(), Some(0));
}
