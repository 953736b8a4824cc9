//! `unicast N RATE`: publish-to-receive latency on many ids.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::clock::{log, now_ns};
use crate::publisher::Publisher;
use crate::report::{json_f, percentile_ms, prefix};
use crate::server_stats::{TICKS_PER_SEC, usage, wait_parked};
use crate::subscriber::{Dialer, Position, markers};

pub(crate) async fn unicast(
    args: &Args,
    n: usize,
    rate: u64,
    secs: u64,
    publishers: usize,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let prefix = prefix(args);
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let mode = args.cursor;
    let total = (rate * secs) as usize;
    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..total).map(|_| AtomicBool::new(false)).collect());
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let delivered = Arc::new(AtomicUsize::new(0));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let dialer = Arc::clone(&dialer);
        let (seen, latencies, delivered, duplicates, failed) = (
            seen.clone(),
            latencies.clone(),
            delivered.clone(),
            duplicates.clone(),
            failed.clone(),
        );
        let path = dialer.path(&format!("{prefix}-{i}"));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let run = async {
                let mut subscriber = dialer.open().await?;
                let mut position = Position::default();
                let mut errors = 0;
                loop {
                    let (path, headers) = position.request(mode, &path);
                    match subscriber.poll(&path, &headers).await {
                        Ok(reply) => {
                            let at = now_ns();
                            position.update(&reply);
                            for (seq, sent) in markers(&reply.body) {
                                let fresh = seen
                                    .get(seq as usize)
                                    .is_some_and(|flag| !flag.swap(true, Ordering::Relaxed));
                                if fresh {
                                    latencies.lock().unwrap().push(at.saturating_sub(sent));
                                    delivered.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    duplicates.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(err) => {
                            errors += 1;
                            if errors > 3 {
                                return io::Result::<()>::Err(err);
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                result = run => if result.is_err() { failed.fetch_add(1, Ordering::Relaxed); }
            }
        }));
    }
    let parked_now = wait_parked(args, n as u64, deadline, false).await;
    log(format!(
        "parked {parked_now:?}; publishing {total} events at {rate}/s"
    ));
    let published = Arc::new(AtomicUsize::new(0));
    let cpu_before = usage(&args.pids).cpu_ticks;
    let started = Instant::now();
    let mut publishing = Vec::new();
    for p in 0..publishers.max(1) {
        let mut publisher = Publisher::new(args);
        let published = published.clone();
        let prefix = prefix.clone();
        let step = publishers.max(1);
        publishing.push(tokio::spawn(async move {
            let mut seq = p;
            while seq < total && Instant::now() < deadline {
                let due = started + Duration::from_secs_f64(seq as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let id = format!("{prefix}-{}", fastrand::usize(..n));
                if publisher.publish(&id, seq as u64).await {
                    published.fetch_add(1, Ordering::Relaxed);
                }
                seq += step;
            }
        }));
    }
    for task in publishing {
        let _ = task.await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let published = published.load(Ordering::Relaxed);
    let drain_until = (Instant::now() + Duration::from_secs(10)).min(deadline);
    while delivered.load(Ordering::Relaxed) < published && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_ms = (usage(&args.pids).cpu_ticks - cpu_before) as f64 * 1000.0 / TICKS_PER_SEC;
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    let delivered = delivered.load(Ordering::Relaxed);
    format!(
        "{{\"scenario\":\"unicast\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"rate\":{rate},\"secs\":{secs},\"publish_secs\":{},\"attempted\":{total},\"published\":{published},\"delivered\":{delivered},\"lost\":{},\"duplicates\":{},\"failed\":{},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"server_cpu_us_per_event\":{}}}",
        args.label,
        args.http2,
        json_f(publish_secs),
        published.saturating_sub(delivered),
        duplicates.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        json_f(percentile_ms(&latencies, 0.5)),
        json_f(percentile_ms(&latencies, 0.99)),
        json_f(percentile_ms(&latencies, 0.999)),
        json_f(percentile_ms(&latencies, 1.0)),
        json_f(cpu_ms * 1000.0 / published.max(1) as f64),
    )
}
