//! `hold N`: memory per held poll and idle CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::clock::log;
use crate::report::{json_f, json_opt, prefix};
use crate::server_stats::{TICKS_PER_SEC, parked, usage, wait_parked};
use crate::subscriber::Dialer;

pub(crate) async fn hold(args: &Args, n: usize, idle_secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let before = usage(&args.pids);
    let parked_before = parked(args).await.unwrap_or(0);
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let release = CancellationToken::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let early = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let prefix = prefix(args);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let dialer = Arc::clone(&dialer);
        let release = release.clone();
        let (sent, early, failed) = (sent.clone(), early.clone(), failed.clone());
        let path = dialer.path(&format!("{prefix}-{i}"));
        tasks.push(tokio::spawn(async move {
            let mut subscriber = match dialer.open().await {
                Ok(subscriber) => subscriber,
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let poll = async {
                sent.fetch_add(1, Ordering::Relaxed);
                subscriber.poll(&path, &[]).await
            };
            tokio::select! {
                _ = release.cancelled() => {}
                result = poll => {
                    match result {
                        Ok(_) => early.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    release.cancelled().await;
                }
            }
        }));
    }
    while sent.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log(format!("{} polls sent", sent.load(Ordering::Relaxed)));
    let parked_now = wait_parked(args, parked_before + n as u64, deadline, false).await;
    // Let the server finish what the connects started before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = usage(&args.pids);
    let idle = Duration::from_secs(idle_secs.min(args.max_secs));
    tokio::time::sleep(idle).await;
    let after = usage(&args.pids);
    let idle_cpu = (after.cpu_ticks - held.cpu_ticks) as f64 / TICKS_PER_SEC / idle.as_secs_f64();
    let early = early.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let held_polls = n - early - failed;
    release.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let per_poll = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0 / held_polls.max(1) as f64;
    format!(
        "{{\"scenario\":\"hold\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"held\":{held_polls},\"answered_early\":{early},\"failed\":{failed},\"parked\":{},\"rss_anon_before_kb\":{},\"rss_anon_held_kb\":{},\"bytes_per_poll\":{},\"rss_bytes_per_poll\":{},\"idle_cpu_pct\":{},\"processes\":{}}}",
        args.label,
        args.http2,
        json_opt(parked_now),
        before.rss_anon_kb,
        held.rss_anon_kb,
        json_f(per_poll(held.rss_anon_kb, before.rss_anon_kb)),
        json_f(per_poll(held.rss_kb, before.rss_kb)),
        json_f(idle_cpu * 100.0),
        held.processes,
    )
}
