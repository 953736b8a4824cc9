//! The gateway's test support: the real `longpoll-gateway` binary started on
//! free ports (its addresses read from its first lines, stopped by its PID),
//! GRIP's JWTs, and a GRIP backend (`upstream`), on top of what every crate
//! of the workspace shares (`longpoll-test-support`).

#![allow(dead_code)]

pub mod named;
pub mod python;
pub mod streams;
pub mod upstream;

#[allow(unused_imports)]
pub use longpoll_test_support::{
    Conn, PATIENCE, Reply, chaos, eventually, get, listener, metrics, request, within,
};

use std::net::SocketAddr;
use std::process::{Command, ExitStatus};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use longpoll_test_support::metrics::{eventually_metric, read_metric};
use longpoll_test_support::server::ServerProcess;
use sha2::Sha256;

/// A running gateway process.
pub struct Gateway {
    process: ServerProcess,
    /// The client listener.
    pub addr: SocketAddr,
    /// The publish listener (publish API, metrics, health).
    pub publish: SocketAddr,
}

impl Gateway {
    /// Starts the gateway in front of `upstream` with extra `args`.
    pub async fn start(upstream: &str, args: &[&str]) -> Gateway {
        Self::start_with(
            &[
                "--listen",
                "127.0.0.1:0",
                "--publish-listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
            ],
            args,
            &[],
        )
        .await
    }

    /// Starts the gateway with exactly these arguments and environment.
    pub async fn start_with(base: &[&str], args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_longpoll-gateway"));
        for (name, _) in std::env::vars() {
            if name.starts_with("LONGPOLL_GATEWAY_") {
                command.env_remove(name);
            }
        }
        command.args(base).args(args).envs(env.iter().copied());
        let (process, addrs) = ServerProcess::spawn(
            command,
            "the gateway",
            &["listening on ", "publish API on "],
        )
        .await;
        let (addr, publish) = (addrs[0], addrs[1]);
        Gateway {
            process,
            addr,
            publish,
        }
    }

    /// The value of a metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        read_metric(self.publish, name).await
    }

    /// Waits until the metric has this value.
    pub async fn metric_is(&self, name: &str, value: u64) {
        eventually_metric(self.publish, name, value).await;
    }

    /// Waits until `n` GRIP holds are waiting.
    pub async fn holding(&self, n: u64) {
        self.metric_is("longpoll_gateway_grip_holding", n).await;
    }

    /// Waits until `n` waiters are parked in the hub.
    pub async fn waiters(&self, n: u64) {
        self.metric_is("longpoll_waiters", n).await;
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM to this process (by PID) and waits for it to exit.
    pub async fn terminate(self) -> ExitStatus {
        self.send_term();
        self.exit().await
    }

    /// Sends SIGTERM to this process, by its PID.
    pub fn send_term(&self) {
        self.process.send_term();
    }

    /// Waits for the process to exit.
    pub async fn exit(self) -> ExitStatus {
        self.process.exit().await
    }
}

/// An HS256 JWT with these claims (JSON text), as GRIP publishers make them.
pub fn jwt(claims: &str, key: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    token
}

/// The claims of an HS256 JWT whose signature matches `key`, or `None`.
pub fn verified_claims(token: &str, key: &[u8]) -> Option<serde_json::Value> {
    let (signed, signature) = token.rsplit_once('.')?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signed.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?)
        .ok()?;
    let claims = signed.split_once('.')?.1;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
