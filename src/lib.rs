//! HTTP long-polling as a [tower] middleware: park a request until an event
//! for its client arrives, answer it on timeout, forget it the moment the
//! client disconnects, and never lose an event.
//!
//! A [`LongPollLayer`] intercepts the poll routes of any tower service whose
//! requests are [`http::Request`]s and responses [`http::Response`]s (an axum
//! `Router`, a tonic server, a plain hyper service) and passes every other
//! request through untouched. Events are published through a [`Hub`], which
//! keeps each client id's events in a bounded log with cursors.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_longpoll::{ClientId, Event, Hub, KeepAlive, LongPollLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new();
//! let layer = LongPollLayer::builder(hub.clone())
//!     .route("/poll/{client}")
//!     .client_id(ClientId::path("client"))
//!     .timeout(Duration::from_secs(30))
//!     .jitter(0.1)
//!     .keepalive(KeepAlive::no_content())
//!     .build();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(layer);
//!
//! // Anywhere in the application:
//! let cursor = hub
//!     .publish("client-42", Event::new(r#"{"n":1}"#).content_type("application/json"))
//!     .await?;
//! # let _ = (app, cursor);
//! # Ok(())
//! # }
//! ```
//!
//! # What a poll gets
//! A `GET` (or `HEAD`) on a poll route waits for the next event of its client
//! id and is answered with:
//! - **an event**: `200`, the event's bytes as the body, its `Content-Type`,
//!   `ETag: "<cursor>"`, `Cache-Control: no-store`, and `Longpoll-Gap: true`
//!   when events the client had not seen are no longer kept;
//! - **a keepalive** when the timeout (± jitter) fires first: `204 No
//!   Content` by default, with `Cache-Control: no-store` and the client's
//!   cursor as `ETag`;
//! - **`503` with `Retry-After`** when the hub shuts down ([`Hub::shutdown`]);
//! - a short plain-text **`4xx`/`503`** for bad input or exceeded limits.
//!
//! A client resumes with its last cursor as `?since=<cursor>`,
//! `Last-Event-ID: <cursor>` or `If-None-Match: "<cursor>"`; events already
//! there are answered at once. A client that sends no cursor gets the events
//! after the id's delivery position, which moves only once an event's
//! response body has been handed to the connection (for an event without
//! bytes, whose body hyper never polls, once its response has).
//! `docs/protocol.md` has the exact wire contract.
//!
//! # Disconnects
//! When a client goes away, hyper drops the response future; the poll leaves
//! the registry at once and nothing is consumed, so its next poll gets the
//! event it would have had. hyper only notices a disconnect once the request
//! body has been read, so the layer parks `GET` and `HEAD` (after reading any
//! small body) and answers other methods `405`. A client that vanished without
//! a FIN or RST cannot be noticed by anyone until TCP keepalive or the poll
//! timeout fires; set TCP keepalive on accepted sockets.
//!
//! # Waiting without the layer
//! Code that holds requests its own way (the `longpoll-gateway` binary holds
//! GRIP requests on several channels at once) waits on the hub directly with
//! [`Hub::wait_for`]: the same race-free wait as a parked poll, on one or
//! several ids, cancelled by dropping it. An [`Event`] may carry its own
//! status and headers, as a published HTTP response does; a
//! [`DeliveryBody`] carries it and records its delivery as the layer does.
//!
//! # Runtime
//! Polls use tokio's timer, so the service runs inside a tokio runtime with
//! time enabled, as hyper and axum servers do.
//!
//! [tower]: https://docs.rs/tower

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
pub mod browser;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod client_id;
mod cursor;
mod endpoint;
mod error;
mod event;
mod future;
mod hub;
mod id;
#[cfg(feature = "serde")]
mod json;
mod keepalive;
mod layer;
mod params;
mod response;
mod route;
mod service;
mod shared;
pub mod store;

pub use crate::body::{DeliveryBody, LongPollBody};
pub use crate::client_id::ClientId;
pub use crate::cursor::{Cursor, ParseCursorError};
pub use crate::endpoint::{LongPollEndpoint, NotAPoll};
pub use crate::error::{Forbidden, PublishError};
pub use crate::event::{Event, StoredEvent};
pub use crate::future::ResponseFuture;
pub use crate::hub::{Hub, HubBuilder, Stats, WaitError, WaitFor, WaitLimits};
pub use crate::id::InvalidId;
pub use crate::keepalive::KeepAlive;
pub use crate::layer::{LongPollLayer, LongPollLayerBuilder};
pub use crate::response::{LAST_EVENT_ID, LONGPOLL_GAP};
pub use crate::route::RequestHead;
pub use crate::service::LongPoll;
