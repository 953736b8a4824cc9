//! Example binaries of `tower-longpoll`, as built by `cargo test`: started on
//! a free port, stopped with SIGTERM by their PID.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use crate::server::ServerProcess;

/// A running example binary.
pub struct Example {
    server: ServerProcess,
    pub addr: SocketAddr,
}

/// Where `cargo test` put the example `name`.
pub fn example_path(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps; examples are in target/<profile>/examples.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
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
        let mut command = Command::new(example_path(name));
        command.args(["--listen", listen]).args(args);
        let (server, addrs) = ServerProcess::spawn(command, name, &["listening on "]).await;
        Example {
            server,
            addr: addrs[0],
        }
    }

    /// Starts the example with `args` (which give each of its listen
    /// addresses, port 0 for a free one) and reads the addresses it bound
    /// from its first lines, one line per prefix: `<prefix>http://ADDR`.
    /// [`Example::addr`] is the first.
    pub async fn start_reading(
        name: &'static str,
        args: &[&str],
        prefixes: &[&str],
    ) -> (Example, Vec<SocketAddr>) {
        let mut command = Command::new(example_path(name));
        command.args(args);
        let (server, addrs) = ServerProcess::spawn(command, name, prefixes).await;
        let example = Example {
            server,
            addr: addrs[0],
        };
        (example, addrs)
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Sends SIGTERM to this process (by PID) and waits for it to exit.
    pub async fn terminate(self) -> ExitStatus {
        self.server.terminate().await
    }
}
