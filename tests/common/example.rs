//! Example binaries, as built by `cargo test`: started on a free port,
//! stopped with SIGTERM by their PID.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::process::Process;
use super::{PATIENCE, request, within};

/// A running example binary.
pub struct Example {
    process: Process,
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
    /// Starts the example on a free port with extra `args`.
    pub async fn start(name: &'static str, args: &[&str]) -> Example {
        Self::start_at(name, "127.0.0.1:0", args).await
    }

    /// Starts the example listening on `listen` (a port given back by a
    /// stopped process can be taken again, to restart on the same port).
    pub async fn start_at(name: &'static str, listen: &str, args: &[&str]) -> Example {
        let child = Command::new(example_path(name))
            .args(["--listen", listen])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut process = Process::new(child, name);
        let stdout = process.child_mut().stdout.take().unwrap();
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
        Example { process, addr }
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM to this process (by PID) and waits for it to exit.
    pub async fn terminate(self) -> ExitStatus {
        self.process.terminate().await
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
