//! Reading the routes file again when it changes: its modification time
//! and size are looked at every second (as Pushpin waits a second after a
//! change before it reads). A file that no longer parses leaves the routes
//! in force, with an error logged; requests already forwarded, held or
//! streaming are not touched either way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Routes, read};
use crate::state::add;

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What the file looked like when last read.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// Counters of the reloads, for `/metrics`.
#[derive(Default)]
pub struct Reloads {
    pub loaded: AtomicU64,
    pub failed: AtomicU64,
}

/// Watches the file until `stop`; swaps in each new reading that parses.
pub fn watch(routes: Arc<Routes>, stop: CancellationToken) {
    let mut last = stamp(&routes.path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&routes.path);
            if now == last || now.is_none() {
                continue;
            }
            last = now;
            let path = routes.path.clone();
            match tokio::task::spawn_blocking(move || read(&path)).await {
                Ok(Ok(table)) => {
                    let count = table.all.len();
                    routes.replace(table);
                    add(&routes.reloads.loaded);
                    tracing::info!(file = %routes.path.display(), routes = count, "routes file reloaded");
                }
                Ok(Err(err)) => {
                    add(&routes.reloads.failed);
                    tracing::error!("routes file not reloaded, the routes in force stay: {err}");
                }
                Err(err) => tracing::error!(error = %err, "routes file reload failed"),
            }
        }
    });
}
