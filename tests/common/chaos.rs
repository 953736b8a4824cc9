//! The chaos workload: clients that poll with cursors while misbehaving in
//! every way, and publishers sending numbered sequences. Shared by the
//! chaos test and the soak tool (tools/soak).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

use super::conn::Conn;

/// What the clients did, for the report.
#[derive(Default)]
pub struct Tally {
    pub polls: AtomicU64,
    pub fins: AtomicU64,
    pub resets: AtomicU64,
    pub mid_response_resets: AtomicU64,
    pub keepalives: AtomicU64,
}

/// The resident memory of a process, from /proc.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// One client: polls its id with its cursor until it has `events` events,
/// misbehaving at random; returns the bodies it accepted, in order.
pub async fn client(addr: SocketAddr, id: String, events: u32, tally: Arc<Tally>) -> Vec<u32> {
    let mut received = Vec::new();
    // `0` from the very first poll: a client that keeps cursors loses
    // nothing even when its first response is lost.
    let mut cursor = "0".to_owned();
    let mut kept: Option<Conn> = None;
    while received.len() < events as usize {
        let mut conn = match kept.take() {
            Some(conn) => conn,
            None => Conn::connect(addr).await,
        };
        conn.send("GET", &format!("/poll/{id}?since={cursor}"), &[])
            .await;
        tally.polls.fetch_add(1, Ordering::Relaxed);
        let reply = match fastrand::u32(0..100) {
            // Half-close at once, but read whatever still comes.
            0..=7 => {
                tally.fins.fetch_add(1, Ordering::Relaxed);
                conn.fin().await;
                conn.read_response(false).await
            }
            // Abort the connection while it is parked (or not yet).
            8..=15 => {
                tally.resets.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
                conn.reset();
                None
            }
            // Wait for the response to start, then abort mid-way.
            16..=21 => {
                tally.mid_response_resets.fetch_add(1, Ordering::Relaxed);
                conn.read_some().await;
                conn.reset();
                None
            }
            _ => {
                let reply = conn.read_response(false).await;
                if reply.is_some() {
                    kept = Some(conn);
                }
                reply
            }
        };
        match reply {
            Some(reply) if reply.status == StatusCode::OK => {
                assert_eq!(
                    reply.header("longpoll-gap"),
                    None,
                    "{id}: the log keeps every event here"
                );
                received.push(reply.text().parse().unwrap());
                cursor = reply.cursor();
            }
            Some(reply) if reply.status == StatusCode::NO_CONTENT => {
                tally.keepalives.fetch_add(1, Ordering::Relaxed);
                // The keepalive gives back the client's cursor (or, for `0`,
                // the id's start).
                if cursor != "0" {
                    assert_eq!(reply.cursor(), cursor, "{id}");
                }
                cursor = reply.cursor();
            }
            Some(reply) => panic!("{id}: unexpected {} {}", reply.status, reply.text()),
            None => {}
        }
        if fastrand::u32(0..100) < 20 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        }
    }
    received
}

/// Publishes `0..events` to every id over a few keep-alive connections, one
/// round of all ids per `round`.
pub async fn publish_all(addr: SocketAddr, ids: Arc<Vec<String>>, events: u32, round: Duration) {
    const CONNECTIONS: usize = 8;
    let publishers: Vec<_> = (0..CONNECTIONS)
        .map(|lane| {
            let ids = Arc::clone(&ids);
            tokio::spawn(async move {
                let mine: Vec<&String> = ids.iter().skip(lane).step_by(CONNECTIONS).collect();
                let mut conn = Conn::connect(addr).await;
                let mut ticks = tokio::time::interval(round / mine.len().max(1) as u32);
                for round in 0..events {
                    for id in &mine {
                        ticks.tick().await;
                        conn.send_with_body(
                            "POST",
                            &format!("/publish/{id}"),
                            &[],
                            round.to_string().as_bytes(),
                        )
                        .await;
                        let reply = conn.response(false).await;
                        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
}
