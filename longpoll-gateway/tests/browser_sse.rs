//! End to end in a real browser: an `EventSource` in Debian's chromium
//! (driven by playwright-core, `tests/browser/sse.mjs` at the workspace's
//! root) reads Server-Sent Events from the django-eventstream app of
//! `tests/interop/django_events.py` through the gateway. Events arrive with
//! their ids; when the stream ends, the browser reconnects with
//! `Last-Event-ID` and gets what was sent meanwhile, each event once.
//!
//! Needs `/usr/bin/chromium`, node and the Python packages that
//! `scripts/test.sh` installs.

mod support;

use std::process::Stdio;
use std::time::Duration;

use longpoll_test_support::browser;
use support::python::{Backend, PUBLISH_TOKEN};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How long the browser script may take in all.
const SCRIPT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventsource_gets_every_event_once_across_a_reconnect() {
    browser::ensure_tools().await;
    let (_app, gateway) = Backend::django_behind_a_gateway().await;
    let mut script = Command::new("node")
        .arg("sse.mjs")
        .arg(format!("http://{}", gateway.addr))
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
