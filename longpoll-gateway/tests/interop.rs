//! Interop with a GRIP library nobody here wrote: a Python backend using the
//! PyPI package `gripcontrol` (tests/interop/grip_backend.py) checks our
//! Grip-Sig, asks for holds with its header and JSON helpers, and publishes
//! with its `GripPubControl`, against the real gateway binary.
//!
//! `.ci/run` installs `gripcontrol`; when the running `python3` cannot
//! import it, this test makes a venv under `target/` and installs it there.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use http::StatusCode;
use support::Gateway;
use support::{Conn, get, within};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The version `.ci/run` installs too.
const GRIPCONTROL: &str = "gripcontrol==4.4.0";
const SIG_KEY: &str = "interop-sig-key";
const SIG_ISS: &str = "interop-gateway";
const PUBLISH_KEY: &str = "interop-publish-key";

fn can_import(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import gripcontrol"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A Python that imports gripcontrol: `python3` itself, or a venv under
/// target/ that gets it from PyPI.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let system = PathBuf::from("python3");
        if can_import(&system) {
            return system;
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gripcontrol-venv");
        let python = venv.join("bin").join("python");
        if !can_import(&python) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(made.success(), "python3 -m venv {} failed", venv.display());
            let installed = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", GRIPCONTROL])
                .status()
                .expect("pip runs");
            assert!(installed.success(), "pip install {GRIPCONTROL} failed");
        }
        assert!(can_import(&python), "gripcontrol is not importable");
        python
    })
}

/// The Python backend, stopped (by its PID) when dropped.
struct Backend {
    child: Child,
    url: String,
}

impl Backend {
    async fn start() -> Backend {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grip_backend.py");
        let mut child = Command::new(python())
            .arg(script)
            .args([SIG_KEY, SIG_ISS, "interop-publisher", PUBLISH_KEY])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = tokio::process::ChildStdout::from_std(child.stdout.take().unwrap()).unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = within("the backend to start", lines.next_line())
            .await
            .unwrap()
            .expect("a first line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Backend { child, url }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the backend to publish through gripcontrol to the gateway.
async fn backend_publishes(backend: &Backend, gateway: &Gateway, path: &str, body: &str) {
    let addr = backend
        .url
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let control = format!("http://{}", gateway.publish);
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        &format!("{path}?control={control}"),
        &[],
        body.as_bytes(),
    )
    .await;
    let reply = conn.response(false).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn a_gripcontrol_backend_holds_and_publishes_through_the_gateway() {
    let backend = Backend::start().await;
    let gateway = Gateway::start(
        &backend.url,
        &[
            "--sig-key",
            SIG_KEY,
            "--sig-iss",
            SIG_ISS,
            "--publish-key",
            PUBLISH_KEY,
            "--grip-timeout-min",
            "1",
        ],
    )
    .await;

    // gripcontrol's validate_sig accepts our Grip-Sig, and only ours.
    assert_eq!(get(gateway.addr, "/sig").await.text(), "valid");
    let direct = backend
        .url
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(get(direct, "/sig").await.text(), "invalid");

    // A hold from create_grip_channel_header, released by GripPubControl
    // (a JWT-authenticated EPCP publish with the format on the item).
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/headers-hold/py-news", &[]).await;
    gateway.holding(1).await;
    backend_publishes(&backend, &gateway, "/publish/py-news", "hello from python").await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello from python");
    assert_eq!(reply.header("x-from"), Some("gripcontrol"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert!(
        reply
            .headers
            .keys()
            .all(|name| !name.as_str().starts_with("grip-"))
    );

    // A hold from create_hold_response: its response on timeout.
    let reply = get(gateway.addr, "/json-hold/py-quiet?timeout=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "timed out");
    assert_eq!(reply.header("x-backend"), Some("py"));

    // The same, released by a binary publish (body-bin).
    let mut client = Conn::connect(gateway.addr).await;
    client.send("GET", "/json-hold/py-bin", &[]).await;
    gateway.holding(1).await;
    backend_publishes(&backend, &gateway, "/publish-bin/py-bin", "").await;
    let reply = client.response(false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"\x00\x01\xff");

    assert_eq!(
        gateway
            .metric("longpoll_gateway_publish_unauthorized_total")
            .await,
        0
    );
    assert_eq!(
        gateway
            .metric("longpoll_gateway_published_items_total")
            .await,
        2
    );
}
