//! A child process a test started: stopped by its PID, never by name, and
//! killed if the test fails before stopping it.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::PATIENCE;

/// A running child process.
pub struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    /// Takes charge of `child`; `name` is for failure messages.
    pub fn new(child: Child, name: &'static str) -> Process {
        Process { child, name }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, to take its output.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends SIGTERM to this process, by its PID.
    pub fn send_term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, for at most [`PATIENCE`].
    pub async fn exit(mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} (pid {}) did not exit",
                self.name,
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, and the exit awaited.
    pub async fn terminate(self) -> ExitStatus {
        self.send_term();
        self.exit().await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A failed test must not leave the process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
