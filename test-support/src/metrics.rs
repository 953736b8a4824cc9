//! Reading a server's Prometheus text exposition (`GET /metrics`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::{PATIENCE, request};

/// One metric's value from a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// One metric's value, read from `GET /metrics` at `addr`.
pub async fn read_metric(addr: SocketAddr, name: &str) -> u64 {
    let reply = request(addr, "GET", "/metrics", &[]).await;
    metric(reply.text(), name)
}

/// Waits until `GET /metrics` at `addr` shows `value` for `name`.
pub async fn eventually_metric(addr: SocketAddr, name: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = read_metric(addr, name).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
