//! What the server under test uses (RSS and CPU from /proc) and how many polls it has parked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Args;
use crate::h1::H1;
use crate::target::parse_url;

/// RSS and CPU of the server's processes, read from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub(crate) rss_anon_kb: u64,
    pub(crate) rss_kb: u64,
    pub(crate) cpu_ticks: u64,
    pub(crate) processes: usize,
}

pub(crate) fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(after) = stat.rfind(')') else {
                continue;
            };
            let ppid = stat[after + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0);
            parents.entry(ppid).or_default().push(pid);
        }
    }
    let mut all = roots.to_vec();
    let mut i = 0;
    while i < all.len() {
        if let Some(children) = parents.get(&all[i]) {
            all.extend(children.iter().copied());
        }
        i += 1;
    }
    all
}

pub(crate) fn usage(pids: &[u32]) -> Usage {
    let mut usage = Usage::default();
    for pid in descendants(pids) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        usage.processes += 1;
        for line in status.lines() {
            let kb = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("RssAnon:") {
                usage.rss_anon_kb += kb();
            } else if line.starts_with("VmRSS:") {
                usage.rss_kb += kb();
            }
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(after) = stat.rfind(')') {
                let fields: Vec<&str> = stat[after + 2..].split_whitespace().collect();
                // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name.
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                usage.cpu_ticks += ticks(11) + ticks(12);
            }
        }
    }
    usage
}

pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// Reads the parked count from `--parked-url`.
pub(crate) async fn parked(args: &Args) -> Option<u64> {
    let url = args.parked_url.as_ref()?;
    let target = parse_url(url);
    let mut conn = H1::new(target.clone(), 0);
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        conn.request(
            "GET",
            &target.path,
            &[("Accept".into(), "text/plain".into())],
            b"",
        ),
    )
    .await
    .ok()?
    .ok()?;
    let text = String::from_utf8_lossy(&reply.body);
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(args.parked_key.as_str())?;
        rest.trim_start_matches([' ', ':', '"', '=', '\t'])
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Waits until the server has `want` polls parked (or, cumulatively, has
/// issued that many holds), bounded by `deadline`; then the settle time.
/// Without a parked URL, waits for the settle time only.
pub(crate) async fn wait_parked(
    args: &Args,
    want: u64,
    deadline: Instant,
    at_most: bool,
) -> Option<u64> {
    let mut last = None;
    // A count that only grows cannot show polls leaving.
    let countable = !(at_most && args.parked_cumulative);
    if args.parked_url.is_some() && countable {
        loop {
            last = parked(args).await;
            let reached = match last {
                Some(count) if at_most => count <= want,
                Some(count) if args.parked_cumulative => count >= want,
                Some(count) => count >= want,
                None => false,
            };
            if reached || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    last
}

// ---------------------------------------------------------------- publishing
