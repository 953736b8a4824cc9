//! `churn N C`: connections opened and reset, and the memory left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::clock::log;
use crate::report::{json_f, json_opt, prefix};
use crate::server_stats::{TICKS_PER_SEC, parked, usage, wait_parked};
use crate::subscriber::Dialer;

pub(crate) async fn churn(args: &Args, n: usize, cycles: usize, rss_settle: Duration) -> String {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let prefix = prefix(args);
    let dialer = Dialer::new(args).await.expect("HTTP/2 connections");
    let parked_before = parked(args).await.unwrap_or(0);
    let before = usage(&args.pids);
    let mut rss = Vec::new();
    let mut failed = 0;
    let mut answered = 0;
    let churn_start = usage(&args.pids);
    for cycle in 0..cycles {
        let sent = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(n);
        let abort = CancellationToken::new();
        for i in 0..n {
            let dialer = Arc::clone(&dialer);
            let sent = sent.clone();
            let abort = abort.clone();
            let path = dialer.path(&format!("{prefix}-{i}"));
            tasks.push(tokio::spawn(async move {
                let mut subscriber = dialer.open().await.ok()?;
                let outcome = {
                    let poll = async {
                        sent.fetch_add(1, Ordering::Relaxed);
                        subscriber.poll(&path, &[]).await
                    };
                    tokio::select! {
                        _ = abort.cancelled() => None,
                        result = poll => Some(result.is_ok()),
                    }
                };
                subscriber.reset();
                Some(outcome)
            }));
        }
        while sent.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let up = wait_parked(args, parked_before + n as u64, deadline, false).await;
        abort.cancel();
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Some(None))) => {}
                Ok(Ok(Some(Some(_)))) => answered += 1,
                _ => failed += 1,
            }
        }
        let down = wait_parked(args, parked_before, deadline, true).await;
        tokio::time::sleep(rss_settle).await;
        let now = usage(&args.pids);
        log(format!(
            "cycle {cycle}: parked {up:?} then {down:?}, rss_anon {} kB",
            now.rss_anon_kb
        ));
        rss.push(now.rss_anon_kb);
    }
    let after = usage(&args.pids);
    // A count of holds issued so far says nothing about what is left.
    let parked_after = if args.parked_cumulative {
        None
    } else {
        parked(args).await
    };
    let churned = (n * cycles) as f64;
    let cpu_us = (after.cpu_ticks - churn_start.cpu_ticks) as f64 / TICKS_PER_SEC * 1e6 / churned;
    let growth =
        |from: usize| rss.last().copied().unwrap_or(0) as i64 - rss[from.min(rss.len() - 1)] as i64;
    // The trend of RSS over the cycles after the first (warm-up): the median
    // of the slopes between every two cycles (Theil-Sen), which one noisy
    // cycle does not swing.
    let slope = {
        let mut slopes = Vec::new();
        for i in 1..rss.len() {
            for j in i + 1..rss.len() {
                slopes.push((rss[j] as f64 - rss[i] as f64) / (j - i) as f64);
            }
        }
        slopes.sort_by(f64::total_cmp);
        if slopes.is_empty() {
            f64::NAN
        } else if slopes.len() % 2 == 1 {
            slopes[slopes.len() / 2]
        } else {
            (slopes[slopes.len() / 2 - 1] + slopes[slopes.len() / 2]) / 2.0
        }
    };
    format!(
        "{{\"scenario\":\"churn\",\"label\":\"{}\",\"http2\":{},\"polls\":{n},\"cycles\":{cycles},\"failed\":{failed},\"answered\":{answered},\"rss_anon_before_kb\":{},\"rss_anon_per_cycle_kb\":{:?},\"growth_after_first_kb\":{},\"growth_after_second_kb\":{},\"slope_kb_per_cycle\":{},\"slope_bytes_per_conn\":{},\"parked_after\":{},\"cpu_us_per_conn\":{}}}",
        args.label,
        args.http2,
        before.rss_anon_kb,
        rss,
        growth(0),
        growth(1),
        json_f(slope),
        json_f(slope * 1024.0 / n as f64),
        json_opt(parked_after.map(|p| p.saturating_sub(parked_before))),
        json_f(cpu_us),
    )
}

// ---------------------------------------------------------------- GRIP backend
