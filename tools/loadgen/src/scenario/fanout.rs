//! `fanout N`: N polls on one id, one publish per round.

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::clock::{log, now_ns};
use crate::publisher::Publisher;
use crate::report::{json_f, percentile_ms, prefix};
use crate::server_stats::{TICKS_PER_SEC, usage, wait_parked};
use crate::subscriber::{Dialer, Position, markers};

pub(crate) async fn fanout(args: &Args, n: usize, rounds: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let channel = format!("{}-fan", prefix(args));
    // The server's memory before any poll, against which each round's
    // parked polls are measured: from the second round on, every poll has
    // been answered once on its connection.
    let base_rss_kb = usage(&args.pids).rss_anon_kb;
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let mode = args.cursor;
    // Per round, the receive times.
    let received: Arc<Vec<Mutex<Vec<u64>>>> = Arc::new(
        (0..rounds)
            .map(|_| Mutex::new(Vec::with_capacity(n)))
            .collect(),
    );
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new((0..rounds).map(|_| AtomicUsize::new(0)).collect());
    let keepalives = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let dialer = Arc::clone(&dialer);
        let (received, counts, keepalives, failed) = (
            received.clone(),
            counts.clone(),
            keepalives.clone(),
            failed.clone(),
        );
        let path = dialer.path(&channel);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let run = async {
                let mut subscriber = dialer.open().await?;
                let mut position = Position::default();
                let mut round = 0;
                let mut errors = 0;
                while round < rounds {
                    let (path, headers) = position.request(mode, &path);
                    match subscriber.poll(&path, &headers).await {
                        Ok(reply) => {
                            let at = now_ns();
                            position.update(&reply);
                            if markers(&reply.body).is_empty() {
                                keepalives.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            received[round].lock().unwrap().push(at);
                            counts[round].fetch_add(1, Ordering::Relaxed);
                            round += 1;
                        }
                        Err(err) => {
                            errors += 1;
                            if errors > 3 {
                                return Err(err);
                            }
                        }
                    }
                }
                // Stay connected until every round is measured: closing here
                // would put the teardown of thousands of connections into
                // the last round's delivery times, for every server.
                stop.cancelled().await;
                io::Result::Ok(())
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                result = run => if result.is_err() { failed.fetch_add(1, Ordering::Relaxed); }
            }
        }));
    }
    let mut publisher = Publisher::new(args);
    let mut all = Vec::new();
    let cpu_before = usage(&args.pids).cpu_ticks;
    let mut per_round = String::new();
    let mut complete = true;
    for round in 0..rounds {
        let want = if args.parked_cumulative {
            (n * (round + 1)) as u64
        } else {
            n as u64
        };
        let parked_now = wait_parked(args, want, deadline, false).await;
        let parked_rss_kb = usage(&args.pids).rss_anon_kb;
        log(format!(
            "round {round}: parked {parked_now:?}, rss_anon {parked_rss_kb} kB, publishing"
        ));
        let published_at = now_ns();
        let ok = publisher.publish(&channel, round as u64).await;
        while counts[round].load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut times: Vec<u64> = received[round]
            .lock()
            .unwrap()
            .iter()
            .map(|at| at.saturating_sub(published_at))
            .collect();
        times.sort_unstable();
        let got = times.len();
        complete &= ok && got == n;
        log(format!(
            "round {round}: {got}/{n} in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile_ms(&times, 0.5),
            percentile_ms(&times, 0.99),
            percentile_ms(&times, 1.0)
        ));
        if !per_round.is_empty() {
            per_round.push(',');
        }
        let _ = write!(
            per_round,
            "{{\"received\":{got},\"parked_rss_bytes_per_poll\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{}}}",
            json_f((parked_rss_kb as f64 - base_rss_kb as f64) * 1024.0 / n as f64),
            json_f(percentile_ms(&times, 0.5)),
            json_f(percentile_ms(&times, 0.99)),
            json_f(percentile_ms(&times, 1.0))
        );
        all.extend(times);
    }
    let cpu_ms = (usage(&args.pids).cpu_ticks - cpu_before) as f64 * 1000.0 / TICKS_PER_SEC;
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    all.sort_unstable();
    format!(
        "{{\"scenario\":\"fanout\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"rounds\":{rounds},\"complete\":{complete},\"received\":{},\"expected\":{},\"keepalives\":{},\"failed\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"server_cpu_us_per_response\":{},\"per_round\":[{per_round}]}}",
        args.label,
        args.http2,
        all.len(),
        n * rounds,
        keepalives.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        json_f(percentile_ms(&all, 0.5)),
        json_f(percentile_ms(&all, 0.99)),
        json_f(percentile_ms(&all, 1.0)),
        json_f(cpu_ms * 1000.0 / all.len().max(1) as f64),
    )
}
