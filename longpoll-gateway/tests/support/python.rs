//! Backends written with GRIP libraries nobody here wrote, run as Python
//! processes: `gripcontrol` (`tests/interop/grip_backend.py`) and
//! `django-eventstream` (`tests/interop/django_events.py`).
//!
//! `scripts/test.sh` installs the pinned packages; when the running
//! `python3` cannot import them, a venv under `target/` gets them from PyPI.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use super::{Gateway, within};

/// The versions `scripts/test.sh` installs too.
pub const PACKAGES: [&str; 3] = [
    "gripcontrol==4.4.0",
    "django-eventstream==5.3.4",
    "websockets==15.0.1",
];
/// Found, not imported: django-eventstream and django-grip read the Django
/// settings as they are imported.
const MODULES: &str = "import gripcontrol, importlib.util as u, sys; \
    sys.exit(any(u.find_spec(m) is None for m in ('django_eventstream', 'django_grip', 'websockets')))";

pub const SIG_KEY: &str = "interop-sig-key-of-at-least-32-bytes";
pub const SIG_ISS: &str = "interop-gateway";
pub const PUBLISH_ISS: &str = "interop-publisher";
pub const PUBLISH_KEY: &str = "interop-publish-key-of-at-least-32-bytes";
/// A plain bearer token for publishers that sign nothing (the browser
/// test's script).
pub const PUBLISH_TOKEN: &str = "interop-publish-token";

fn can_import(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", MODULES])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A Python that imports the packages: `python3` itself, or a venv under
/// target/ that gets them from PyPI.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let system = PathBuf::from("python3");
        if can_import(&system) {
            return system;
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grip-libraries-venv");
        let python = venv.join("bin").join("python");
        if !can_import(&python) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(made.success(), "python3 -m venv {} failed", venv.display());
            let installed = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet"])
                .args(PACKAGES)
                .status()
                .expect("pip runs");
            assert!(installed.success(), "pip install {PACKAGES:?} failed");
        }
        assert!(can_import(&python), "the GRIP libraries are not importable");
        python
    })
}

/// The gateway's arguments for these backends: their keys, and holds as
/// short as a test wants.
pub fn gateway_args() -> Vec<&'static str> {
    vec![
        "--sig-key",
        SIG_KEY,
        "--sig-iss",
        SIG_ISS,
        "--publish-key",
        PUBLISH_KEY,
        "--publish-token",
        PUBLISH_TOKEN,
        "--grip-timeout-min",
        "1",
    ]
}

/// A Python backend, stopped (by its PID) when dropped.
pub struct Backend {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    pub url: String,
    pub addr: SocketAddr,
}

impl Backend {
    /// Runs `tests/interop/<script>` with `args`; reads its address from
    /// its first line, `listening on http://ADDR`.
    pub async fn start(script: &str, args: &[&str]) -> Backend {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop")
            .join(script);
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = ChildStdout::from_std(child.stdout.take().unwrap()).unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = within("the backend to start", lines.next_line())
            .await
            .unwrap()
            .expect("a first line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let addr = url.strip_prefix("http://").unwrap().parse().unwrap();
        Backend {
            child,
            lines,
            url,
            addr,
        }
    }

    /// The `gripcontrol` backend.
    pub async fn gripcontrol() -> Backend {
        Backend::start(
            "grip_backend.py",
            &[SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY],
        )
        .await
    }

    /// The Django app of `django-eventstream` and a gateway in front of it,
    /// whose publish API the app publishes to.
    pub async fn django_behind_a_gateway() -> (Backend, Gateway) {
        Self::django_behind_a_gateway_with(&[]).await
    }

    /// The same, the gateway started with `extra` arguments too.
    pub async fn django_behind_a_gateway_with(extra: &[&str]) -> (Backend, Gateway) {
        let mut app = Backend::start(
            "django_events.py",
            &[SIG_KEY, SIG_ISS, PUBLISH_ISS, PUBLISH_KEY],
        )
        .await;
        let mut args = gateway_args();
        args.extend_from_slice(extra);
        let gateway = Gateway::start(&app.url, &args).await;
        let control = format!("http://{}\n", gateway.publish);
        let stdin = app.child.stdin.as_mut().unwrap();
        std::io::Write::write_all(stdin, control.as_bytes()).unwrap();
        std::io::Write::flush(stdin).unwrap();
        let ready = within("the Django app to migrate", app.lines.next_line())
            .await
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        (app, gateway)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
