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
//! And across origins: the demo page served on one origin polls and
//! publishes on the demo's API on another, which answers CORS for it, with
//! the API's cookie (`credentials: 'include'`); the API restarts on its
//! store (the page resumes by its cursor) and on a new one (the page reads
//! `Longpoll-Gap`).
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
    /// `extra`: the screenshot's path (modes demo and keep), the API's base
    /// URL (mode cors).
    fn start(base: &str, client: &str, mode: &str, extra: Option<&str>) -> Driver {
        let mut command = Command::new("node");
        command
            .arg("e2e.mjs")
            .args([base, client, mode])
            .current_dir(browser::dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(extra) = extra {
            command.arg(extra);
        }
        let mut child = command.spawn().expect("node runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver { child, lines }
    }

    /// Runs another node script of `tests/browser` with `args`.
    fn script(name: &str, args: &[&str]) -> Driver {
        let mut child = Command::new("node")
            .arg(name)
            .args(args)
            .current_dir(browser::dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver { child, lines }
    }

    /// The next line the script prints, which must be one of its `E2E`
    /// lines.
    async fn line(&mut self) -> String {
        match self.lines.next_line().await.unwrap() {
            Some(line) if line.starts_with("E2E ") => line,
            other => {
                let status = self.child.wait().await.unwrap();
                panic!("the script printed {other:?} and ended ({status})");
            }
        }
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

/// Publishes `texts` to `client` on `store` while no server runs.
async fn publish_offline(store: &Arc<dyn Store>, client: &str, texts: &[&str]) {
    let offline = Hub::builder().shared_store(Arc::clone(store)).build();
    for text in texts {
        offline
            .publish(
                client,
                tower_longpoll::Event::new(text.to_string()).content_type("text/plain"),
            )
            .await
            .unwrap();
    }
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
    assert_eq!(script.text(), tower_longpoll::browser::LONGPOLL_JS);
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
    let mut driver = Driver::start(
        &format!("http://{addr}"),
        client,
        "keep",
        screenshot.to_str(),
    );

    driver.expect("restart").await;
    server.hub.shutdown();
    server.stop().await.expect("the server stops");
    let meanwhile = [
        "published while the server was down (1)",
        "published while the server was down (2)",
        "published while the server was down (3)",
    ];
    publish_offline(&store, client, &meanwhile).await;
    let server = serve(listener_at(addr)).await;
    driver.say(&go(&meanwhile, false)).await;

    let status = driver.finish().await;
    assert!(status.success(), "the browser script failed: {status}");
    server.hub.shutdown();
    server.stop().await.expect("the server stops");
    keep_screenshot(&screenshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_polls_through_cors_and_resumes_after_restarts() {
    let _browser = BROWSER.lock().await;
    ensure_tools().await;
    // The page's server: the demo's app, with nothing to do with the API.
    let page_hub = Hub::new();
    let page = TestServer::serve(
        demo_app::router(page_hub.clone(), &demo_app::Options::default()),
        page_hub,
    )
    .await;
    let page_origin = format!("http://{}", page.addr);
    // The API: the demo's app on another port (another origin), allowing
    // the page's origin, on a store that outlives the first restart.
    let options = demo_app::Options {
        retry_after: Duration::from_secs(1),
        allow_origins: vec![demo_app::parse_origin(&page_origin).unwrap()],
        ..demo_app::Options::default()
    };
    let serve = |listener: tokio::net::TcpListener, store: &Arc<dyn Store>| {
        let hub = Hub::builder().shared_store(Arc::clone(store)).build();
        TestServer::serve_on(listener, demo_app::router(hub.clone(), &options), hub)
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let api = serve(support::listener(), &store).await;
    let addr = api.addr;
    let client = "e2e-cors";
    let api_base = format!("http://{addr}");
    let mut driver = Driver::start(&page_origin, client, "cors", Some(&api_base));

    // A restart on the same store: the page resumes from its cursor.
    driver.expect("restart").await;
    api.hub.shutdown();
    api.stop().await.expect("the API stops");
    let meanwhile = [
        "published while the API was down (1)",
        "published while the API was down (2)",
    ];
    publish_offline(&store, client, &meanwhile).await;
    let api = serve(listener_at(addr), &store).await;
    driver.say(&go(&meanwhile, false)).await;

    // A restart on a new store: the page's cursor names a log that is gone.
    driver.expect("restart").await;
    api.hub.shutdown();
    api.stop().await.expect("the API stops");
    let fresh: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let api = serve(listener_at(addr), &fresh).await;
    api.hub
        .publish(
            client,
            tower_longpoll::Event::new("after a fresh start").content_type("text/plain"),
        )
        .await
        .unwrap();
    driver.say(&go(&["after a fresh start"], true)).await;

    let status = driver.finish().await;
    assert!(status.success(), "the browser script failed: {status}");
    api.hub.shutdown();
    api.stop().await.expect("the API stops");
    page.hub.shutdown();
    page.stop().await.expect("the page's server stops");
}

#[tokio::test]
async fn longpoll_js_polls_again_at_once_after_a_408_from_a_timeout_layer() {
    ensure_tools().await;
    // tower-http's TimeoutLayer, wrongly outside the long-poll layer: every
    // poll is cut short with 408 after 300 ms.
    let hub = Hub::new();
    let router = demo_app::router(hub.clone(), &demo_app::Options::default()).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(300),
        ),
    );
    let server = TestServer::serve(router, hub).await;
    let mut script = Driver::script("cut.mjs", &[&format!("http://{}", server.addr), "js-cut"]);
    script.expect("polling").await;
    let hub = server.hub.clone();
    support::eventually("three polls cut short", || hub.stats().cancelled >= 3).await;
    server
        .hub
        .publish(
            "js-cut",
            tower_longpoll::Event::new("through the 408s").content_type("text/plain"),
        )
        .await
        .unwrap();
    // Its backoff is 20 s: an event within PATIENCE came without one.
    let line = support::within("the event", script.line()).await;
    assert!(line.contains("through the 408s"), "{line}");
    let status = script.child.wait().await.unwrap();
    assert!(status.success(), "{status}");
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
