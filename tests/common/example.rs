//! Example binaries, as built by `cargo test`: started on a free port,
//! stopped with SIGTERM by their PID.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{PATIENCE, request, within};

/// A running example binary.
pub struct Example {
    child: Child,
    pub addr: SocketAddr,
}

pub fn example_path(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps; examples are in target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; run it with its default targets",
        path.display()
    );
    path
}

impl Example {
    pub async fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example_path(name))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdout = tokio::process::ChildStdout::from_std(stdout).unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = within("the example to start listening", lines.next_line())
            .await
            .unwrap()
            .expect("a first line");
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the example never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Example { child, addr }
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM to this process (by PID) and waits for it to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the example did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        // A failed test must not leave the process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads one metric's value from a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Waits until the example's `/metrics` shows `value` for `name`.
pub async fn eventually_metric(addr: SocketAddr, name: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = request(addr, "GET", "/metrics", &[]).await;
        if metric(text.text(), name) == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {value}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
