//! End to end in a real browser: a page's `WebSocket` in Debian's chromium
//! (driven by playwright-core, `tests/browser/ws.mjs` at the workspace's
//! root) talks through the gateway, as WebSocket-over-HTTP, to the
//! gripcontrol backend of `tests/interop/ws_backend.py`: echo, a
//! `ws-message` publish, the backend's close code.
//!
//! Needs `/usr/bin/chromium`, node and the Python packages that
//! `scripts/test.sh` installs.

mod support;

use std::process::Stdio;
use std::time::Duration;

use longpoll_test_support::browser;
use support::Gateway;
use support::python::{
    Backend, PUBLISH_ISS, PUBLISH_KEY, PUBLISH_TOKEN, SIG_ISS, SIG_KEY, gateway_args,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How long the browser script may take in all.
const SCRIPT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_websocket_speaks_through_the_gateway() {
    browser::ensure_tools().await;
    let backend = Backend::start(
        "ws_backend.py",
        &[SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY],
    )
    .await;
    let mut args = gateway_args();
    args.push("--over-http");
    let gateway = Gateway::start(&backend.url, &args).await;
    let mut script = Command::new("node")
        .arg("ws.mjs")
        .arg(format!("ws://{}", gateway.addr))
        .arg(format!("http://{}", gateway.publish))
        .arg(PUBLISH_TOKEN)
        .current_dir(browser::dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let run = async {
        let mut ok = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            ok |= line == "E2E ok";
        }
        (ok, script.wait().await.unwrap())
    };
    let (ok, status) = tokio::time::timeout(SCRIPT, run)
        .await
        .expect("the browser script finishes");
    assert!(
        ok && status.success(),
        "the browser script failed ({status}); its log is above"
    );
}
