//! A server binary run by a test: started with its listen addresses at port
//! 0, the addresses it bound read from the lines it prints first, stopped
//! with SIGTERM by its PID (and killed if the test fails first).

use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use crate::process::Process;
use crate::within;

/// A running server process.
pub struct ServerProcess {
    process: Process,
}

impl ServerProcess {
    /// Spawns `command` (stdout piped, stderr inherited, `RUST_LOG=warn`
    /// unless set) and reads one address from each of its first lines: a
    /// line is `<prefix>http://ADDR` or `<prefix>https://ADDR`, with the
    /// prefixes given in order (such as `"listening on "`). What it prints
    /// afterwards is drained so that it never blocks on a full pipe.
    pub async fn spawn(
        mut command: Command,
        name: &'static str,
        prefixes: &[&str],
    ) -> (ServerProcess, Vec<SocketAddr>) {
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        let mut process = Process::new(child, name);
        let stdout = process.child_mut().stdout.take().expect("piped stdout");
        let stdout = ChildStdout::from_std(stdout).expect("a tokio pipe");
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let line = next_line(&mut lines, name).await;
            let rest = line
                .strip_prefix(prefix)
                .and_then(|rest| {
                    rest.strip_prefix("http://")
                        .or_else(|| rest.strip_prefix("https://"))
                })
                .unwrap_or_else(|| panic!("{name}: expected {prefix:?}http://ADDR, got {line:?}"));
            let addr = rest
                .parse()
                .unwrap_or_else(|err| panic!("{name}: bad address in {line:?}: {err}"));
            addrs.push(addr);
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (ServerProcess { process }, addrs)
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM to this process, by its PID.
    pub fn send_term(&self) {
        self.process.send_term();
    }

    /// Waits for the process to exit.
    pub async fn exit(self) -> ExitStatus {
        self.process.exit().await
    }

    /// SIGTERM, and the exit awaited.
    pub async fn terminate(self) -> ExitStatus {
        self.process.terminate().await
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, name: &str) -> String {
    within(&format!("{name} to start"), lines.next_line())
        .await
        .unwrap_or_else(|err| panic!("{name}: reading its output: {err}"))
        .unwrap_or_else(|| panic!("{name} exited before printing its addresses"))
}
