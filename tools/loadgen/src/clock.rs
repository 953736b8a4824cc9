//! Timestamps relative to the run's start, and progress lines on stderr.

use std::sync::OnceLock;
use std::time::Instant;

pub(crate) fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

pub(crate) fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

pub(crate) fn log(message: impl AsRef<str>) {
    eprintln!(
        "[loadgen {:8.3}s] {}",
        base().elapsed().as_secs_f64(),
        message.as_ref()
    );
}

// ---------------------------------------------------------------- URLs
