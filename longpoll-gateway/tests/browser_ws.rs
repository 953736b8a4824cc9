//! End to end in a real browser: a page's `WebSocket` in Debian's chromium
//! (driven by playwright-core, `tests/browser/ws.mjs` at the workspace's
//! root) talks through the gateway, as WebSocket-over-HTTP, to the
//! gripcontrol backend of `tests/interop/ws_backend.py`: echo, a
//! `ws-message` publish, the backend's close code.
//!
//! Needs `/usr/bin/chromium`, node and the Python packages that
//! `scripts/test.sh` installs.

mod support;

use std::time::Duration;

use longpoll_test_support::browser;
use support::Gateway;
use support::python::{
    Backend, PUBLISH_ISS, PUBLISH_KEY, PUBLISH_TOKEN, SIG_ISS, SIG_KEY, gateway_args,
};

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
    browser::run_script(
        "ws.mjs",
        &[
            format!("ws://{}", gateway.addr),
            format!("http://{}", gateway.publish),
            PUBLISH_TOKEN.to_owned(),
        ],
        SCRIPT,
    )
    .await;
}
