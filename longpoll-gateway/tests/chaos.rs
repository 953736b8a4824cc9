//! Chaos through the gateway: 2,000 clients polling a `--route` with cursors
//! while they disconnect in every way, publishes through the publish API;
//! every client gets every event of its id, in order, none twice, no waiter
//! is left, memory is back near where it stood after a warm-up
//! (`longpoll_test_support::chaos`, as the library's tests/chaos.rs runs it
//! against the demo).

mod support;

use support::Gateway;
use support::chaos::{self, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_through_the_gateway() {
    // Route polls never reach the upstream; it only has to be a URL.
    let gateway = Gateway::start(
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
    chaos::run(target, gateway.publish, "gateway").await;
    assert_eq!(gateway.terminate().await.code(), Some(0));
}
