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

use std::time::Duration;

use longpoll_test_support::browser;
use support::python::{Backend, PUBLISH_TOKEN};

/// How long the browser script may take in all.
const SCRIPT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventsource_gets_every_event_once_across_a_reconnect() {
    browser::ensure_tools().await;
    let (_app, gateway) = Backend::django_behind_a_gateway().await;
    browser::run_script(
        "sse.mjs",
        &[
            format!("http://{}", gateway.addr),
            format!("http://{}", gateway.publish),
            PUBLISH_TOKEN.to_owned(),
        ],
        SCRIPT,
    )
    .await;
}
