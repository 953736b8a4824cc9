//! Headless Chromium for the browser tests of both crates: Debian's
//! chromium, driven by playwright-core from `tests/browser/` at the
//! workspace's root (pinned by its `package-lock.json`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Debian's chromium, which `scripts/test.sh` installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The folder of the browser scripts and their `node_modules`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Checks for chromium and node, and installs playwright-core (pinned in
/// `tests/browser/package-lock.json`) when it is missing.
pub async fn ensure_tools() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/run, which installs Debian's chromium \
         (or `apt-get install chromium`)"
    );
    let node = Command::new("node").arg("--version").output().await;
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "node is missing: install Debian's nodejs and npm"
    );
    let dir = dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .await
            .expect("npm runs");
        assert!(status.success(), "`npm ci` in {} failed", dir.display());
    }
}

/// Runs the browser script `script` (in [`dir`]) with `args`, its log on
/// the test's stderr, and asserts that it printed `E2E ok` and exited 0
/// within `patience`.
pub async fn run_script(script: &str, args: &[String], patience: Duration) {
    let mut node = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let run = async {
        let mut ok = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            ok |= line == "E2E ok";
        }
        (ok, node.wait().await.unwrap())
    };
    let (ok, status) = tokio::time::timeout(patience, run)
        .await
        .unwrap_or_else(|_| panic!("the browser script {script} did not finish"));
    assert!(
        ok && status.success(),
        "the browser script {script} failed ({status}); its log is above"
    );
}
