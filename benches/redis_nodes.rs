//! Figures for docs/scaling.md: the Redis store's publish cost, the latency
//! of a wake-up across nodes, and what an idle node pays for publishes.
//!
//! ```text
//! cargo bench --features redis --bench redis_nodes      # REDIS_URL, default redis://127.0.0.1:6379
//! ```
//!
//! Prints one JSON line per figure. Bounded: a few thousand publishes, 500
//! wake-up rounds, all on loopback.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tower_longpoll::store::RedisStore;
use tower_longpoll::{Event, Hub, LongPollLayer};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

async fn hub(url: &str, prefix: &str) -> (Hub, RedisStore) {
    let store = RedisStore::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .expect("a Redis server at REDIS_URL");
    (Hub::builder().store(store.clone()).build(), store)
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("lp-bench-{:016x}", fastrand::u64(..));

    // What a node subscribed to every wake-up (PSUBSCRIBE) would receive.
    let observer =
        fred::types::Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
            .build_subscriber_client()
            .unwrap();
    observer.init().await.unwrap();
    observer
        .psubscribe(format!("{prefix}:{{*}}:w"))
        .await
        .unwrap();
    let pattern_messages = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
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

    let (publisher, _) = hub(&url, &prefix).await;
    let (idle_hub, idle_store) = hub(&url, &prefix).await;
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
        r#"{{"figure":"publish_sequential","publishes":{SEQUENTIAL},"us_per_publish":{:.1},"per_second":{:.0}}}"#,
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
        r#"{{"figure":"publish_concurrent","tasks":{TASKS},"publishes":{},"per_second":{:.0}}}"#,
        TASKS * EACH,
        (TASKS * EACH) as f64 / elapsed.as_secs_f64()
    );

    // 3. A poll parked on node A, answered by a publish on node B.
    let (node_a, _) = hub(&url, &prefix).await;
    let layer = LongPollLayer::builder(node_a.clone())
        .route("/poll/{client}")
        .timeout(Duration::from_secs(30))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
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
        r#"{{"figure":"cross_node_wake","rounds":{ROUNDS},"p50_ms":{:.3},"p99_ms":{:.3},"max_ms":{:.3}}}"#,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );

    // 4. What the idle node and a pattern subscriber received meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let published = publisher.stats().published;
    println!(
        r#"{{"figure":"idle_node_wakeups","publishes":{published},"per_id_subscriptions":{},"pattern_subscription":{}}}"#,
        idle_store.wakeups_received(),
        pattern_messages.load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(idle_hub);
}
