//! End to end in a real browser: Debian's chromium, driven by playwright-core
//! (`tests/browser/e2e.mjs`, run with node), against the demo page and its
//! `/longpoll.js`. Two tabs of one client id share one poll, both show each
//! event, the server restarts and the page recovers.
//!
//! Two restarts, because an in-memory server cannot keep events across a
//! restart of its process:
//! - the demo binary itself, stopped by PID and started again on the same
//!   port: the page recovers, gets what is published after the restart, and
//!   is told honestly (`Longpoll-Gap`) that the events before it are gone;
//! - the demo's app in-process, on a store that outlives the server (as a
//!   shared store would in production): events published while the server
//!   is down are all delivered, in order, with no gap.
//!
//! Needs `/usr/bin/chromium` and node (`.ci/run` installs chromium); the
//! test runs `npm ci` in `tests/browser` when playwright-core is missing.

mod support;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo_app;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use longpoll_test_support::browser::{self, ensure_tools};
use support::example::Example;
use support::{Conn, TestServer, listener_at};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::Mutex;
use tower_longpoll::Hub;
use tower_longpoll::store::{MemoryStore, Store};

/// How long the browser script may take from one step to the next.
const STEP: Duration = Duration::from_secs(90);

/// One browser at a time: two chromiums on a 2-core machine only slow
/// each other down; and one `npm ci` at a time.
static BROWSER: Mutex<()> = Mutex::const_new(());

/// The browser script, stopped by its PID if the test fails.
struct Driver {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Driver {
    fn start(base: &str, client: &str, mode: &str, screenshot: Option<&Path>) -> Driver {
        let mut command = Command::new("node");
        command
            .arg("e2e.mjs")
            .args([base, client, mode])
            .current_dir(browser::dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(path) = screenshot {
            command.arg(path);
        }
        let mut child = command.spawn().expect("node runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver { child, lines }
    }

    /// Waits for the script to print `E2E <step>`.
    async fn expect(&mut self, step: &str) {
        let wanted = format!("E2E {step}");
        loop {
            let line = tokio::time::timeout(STEP, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the browser script never reached {step:?}"))
                .unwrap();
            match line {
                Some(line) if line == wanted => return,
                Some(line) if line.starts_with("E2E ") => {
                    panic!("expected {wanted:?}, got {line:?}")
                }
                Some(_) => {}
                None => {
                    let status = self.child.wait().await.unwrap();
                    panic!("the browser script ended ({status}) before {step:?}; its log is above");
                }
            }
        }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn finish(mut self) -> ExitStatus {
        self.expect("ok").await;
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("the browser script exits")
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SIGTERM by PID: playwright closes chromium on it.
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// `POST /publish/{client}` with a text body; the event's cursor.
async fn publish(addr: SocketAddr, client: &str, text: &str) -> String {
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        &format!("/publish/{client}"),
        &[("content-type", "text/plain; charset=utf-8")],
        text.as_bytes(),
    )
    .await;
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    reply.cursor()
}

fn go(expect: &[&str], gap: bool) -> String {
    let texts: Vec<String> = expect.iter().map(|t| format!("{t:?}")).collect();
    format!("go {{\"expect\":[{}],\"gap\":{gap}}}", texts.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_share_one_poll_and_recover_from_a_restart_of_the_demo() {
    let _browser = BROWSER.lock().await;
    ensure_tools().await;
    let demo = Example::start("demo", &[]).await;
    let addr = demo.addr;
    let script = support::get(addr, "/longpoll.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(script.text(), demo_app::LONGPOLL_JS);
    let client = "e2e-demo";
    let mut driver = Driver::start(&format!("http://{addr}"), client, "demo", None);

    driver.expect("restart").await;
    // The parked poll is answered 503 + Retry-After; the page backs off.
    assert_eq!(demo.terminate().await.code(), Some(0));
    let demo = Example::start_at("demo", &addr.to_string(), &[]).await;
    assert_eq!(demo.addr, addr);
    // Published before the page is back (it waits at least Retry-After):
    // kept for it all the same. The new process's log has a new epoch, so the
    // page's cursor is from before: the event comes with Longpoll-Gap.
    publish(addr, client, "after the restart").await;
    driver.say(&go(&["after the restart"], true)).await;

    let status = driver.finish().await;
    assert!(status.success(), "the browser script failed: {status}");
    assert_eq!(demo.terminate().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_the_server_is_down_reach_both_tabs() {
    let _browser = BROWSER.lock().await;
    ensure_tools().await;
    // The store outlives the server, as a shared store would; each server
    // incarnation gets a new Hub (a hub that has shut down stays down).
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = demo_app::Options {
        retry_after: Duration::from_secs(1),
        ..demo_app::Options::default()
    };
    let serve = |listener: tokio::net::TcpListener| {
        let hub = Hub::builder().shared_store(Arc::clone(&store)).build();
        TestServer::serve_on(listener, demo_app::router(hub.clone(), &options), hub)
    };
    let server = serve(support::listener()).await;
    let addr = server.addr;
    let client = "e2e-keep";
    let screenshot = target_dir().join("demo.png");
    let mut driver = Driver::start(&format!("http://{addr}"), client, "keep", Some(&screenshot));

    driver.expect("restart").await;
    server.hub.shutdown();
    server.stop().await.expect("the server stops");
    let meanwhile = [
        "published while the server was down (1)",
        "published while the server was down (2)",
        "published while the server was down (3)",
    ];
    let offline = Hub::builder().shared_store(Arc::clone(&store)).build();
    for text in meanwhile {
        offline
            .publish(
                client,
                tower_longpoll::Event::new(text).content_type("text/plain"),
            )
            .await
            .unwrap();
    }
    let server = serve(listener_at(addr)).await;
    driver.say(&go(&meanwhile, false)).await;

    let status = driver.finish().await;
    assert!(status.success(), "the browser script failed: {status}");
    server.hub.shutdown();
    server.stop().await.expect("the server stops");
    keep_screenshot(&screenshot);
}

/// Where test output goes: target/browser.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The README's screenshot, docs/demo.png, is written when it is missing or
/// when `LONGPOLL_SCREENSHOT=update`, so that test runs do not churn a
/// tracked file; each run leaves its own in target/<profile>/browser.
fn keep_screenshot(taken: &Path) {
    let bytes = std::fs::read(taken).expect("the browser script saved a screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/demo.png");
    if !docs.exists() || std::env::var("LONGPOLL_SCREENSHOT").as_deref() == Ok("update") {
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, bytes).unwrap();
    }
}
