//! Headless Chromium for the browser tests of both crates: Debian's
//! chromium, driven by playwright-core from `tests/browser/` at the
//! workspace's root (pinned by its `package-lock.json`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

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
