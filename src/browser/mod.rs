//! The browser client, shipped with the crate: `longpoll.js`, one ES module
//! with no dependencies, as a string ([`LONGPOLL_JS`]) and as a tiny tower
//! service that serves it ([`LongPollJs`]).
//!
//! It follows the same rules as the Rust client: it keeps the cursor of the
//! last event (in `sessionStorage`, so a reload resumes), polls again at once
//! after a keepalive or a `408` from a timeout layer, backs off with jitter
//! and honours `Retry-After` on `429`, `5xx` and network errors, reports
//! `Longpoll-Gap`, and shares one poll between the tabs of an origin. Its
//! options and events are documented at the top of the file, and in
//! `docs/clients.md`.
//!
//! Mount the service where the page imports the module from:
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use tower_longpoll::browser::LongPollJs;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "the page" }))
//!     .route_service("/longpoll.js", LongPollJs::new());
//! ```
//!
//! ```html
//! <script type="module">
//!   import { LongPoll } from '/longpoll.js';
//!   const poll = new LongPoll('/poll/alice');
//!   poll.addEventListener('event', e => console.log(e.detail.data));
//!   poll.start();
//! </script>
//! ```
//!
//! A page on another origin than the API polls it with an absolute URL and,
//! to send cookies, `{ credentials: 'include' }`; the API must then answer
//! CORS for that origin (`docs/axum.md` shows the `CorsLayer`).

mod service;

pub use self::service::{LongPollJs, ScriptBody};

/// The browser client's source: an ES module exporting `LongPoll`.
///
/// [`LongPollJs`] serves exactly these bytes; use the constant to embed the
/// module elsewhere (a bundle, a static file written at build time).
pub const LONGPOLL_JS: &str = include_str!("longpoll.js");
