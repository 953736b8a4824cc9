//! Running the real `longpoll-gateway` binary in tests: started on free
//! ports, its addresses read from its first lines, stopped by its PID.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::process::Process;
use crate::common::{PATIENCE, get, within};

/// A running gateway process.
pub struct Gateway {
    process: Process,
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
        let child = command
            .args(base)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut process = Process::new(child, "the gateway");
        let stdout = process.child_mut().stdout.take().unwrap();
        let stdout = tokio::process::ChildStdout::from_std(stdout).unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut next = async || {
            within("the gateway to start", lines.next_line())
                .await
                .unwrap()
                .expect("a line from the gateway")
        };
        let first = next().await;
        let addr = first
            .strip_prefix("listening on http://")
            .or_else(|| first.strip_prefix("listening on https://"))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        let second = next().await;
        let publish = second
            .strip_prefix("publish API on http://")
            .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
            .parse()
            .unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            process,
            addr,
            publish,
        }
    }

    /// The value of a metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let reply = get(self.publish, "/metrics").await;
        let text = reply.text();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
            .parse()
            .unwrap()
    }

    /// Waits until the metric has this value.
    pub async fn metric_is(&self, name: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.metric(name).await;
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
