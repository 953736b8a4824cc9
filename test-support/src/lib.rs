//! What the tests of the workspace share: a small HTTP/1.1 client over raw
//! sockets (so that tests control FIN and RST exactly), child processes
//! started on free ports and stopped by their PID, Prometheus metric readers,
//! and the chaos workload (also driven by the soak tool, `tools/soak`).
//!
//! It depends on neither `tower-longpoll` nor `longpoll-gateway`: each
//! crate's `tests/support/` adds what is its own on top of it.

pub mod browser;
pub mod chaos;
pub mod conn;
pub mod example;
pub mod metrics;
pub mod process;
pub mod redis;
pub mod server;

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

pub use conn::{Conn, PATIENCE, Reply, get, request, within};

/// A listener with a backlog large enough for bursts of thousands of connects.
pub fn listener() -> TcpListener {
    listener_at("127.0.0.1:0".parse().expect("an address"))
}

/// A listener on `addr`: a port given back by a stopped server can be bound
/// again at once (`SO_REUSEADDR`), to restart a server on the same port.
pub fn listener_at(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind");
    socket.listen(4096).expect("listen")
}

/// Waits for `condition` to hold, checking every millisecond, up to
/// [`PATIENCE`]; panics naming `what` when it never does.
pub async fn eventually(what: impl Display, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
