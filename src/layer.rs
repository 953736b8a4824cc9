//! The layer and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::client_id::ClientId;
use crate::error::Forbidden;
use crate::hub::{Hub, WaitLimits};
use crate::keepalive::KeepAlive;
use crate::route::{Pattern, RequestHead, Route};
use crate::service::LongPoll;
use crate::shared::{Authorize, Shared};

/// Applies long-polling to the matched routes of a service.
///
/// Built with [`LongPollLayer::builder`]; see the [crate docs](crate) for the
/// whole picture.
#[derive(Clone)]
pub struct LongPollLayer {
    pub(crate) shared: Arc<Shared>,
}

/// No poll waits longer than a day: it keeps deadline arithmetic far from
/// overflow, and nothing is gained by waiting longer.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Builds a [`LongPollLayer`].
///
/// Made by [`LongPollLayer::builder`] with the [`Hub`] the polls wait on;
/// only a route is required besides. The defaults: the id
/// from the only `{param}` of the first route (every route must have it), a
/// 30 s timeout with ±10 % jitter (clients
/// may ask for up to 30 s), `204 No Content` keepalives, 8 parked polls per
/// id, 100,000 parked polls in all, no batching, `Retry-After` from 1 to 5 s,
/// and at most 16 KiB of request body on a poll.
#[must_use = "a builder does nothing until `build` is called"]
pub struct LongPollLayerBuilder {
    hub: Hub,
    routes: Vec<Route>,
    client_id: Option<ClientId>,
    authorize: Option<Arc<Authorize>>,
    timeout: Duration,
    max_timeout: Option<Duration>,
    jitter: f64,
    keepalive: KeepAlive,
    limits: WaitLimits,
    max_batch: usize,
    retry_after_max: Duration,
    max_request_body: usize,
}

impl LongPollLayerBuilder {
    fn new(hub: Hub) -> Self {
        LongPollLayerBuilder {
            hub,
            routes: Vec::new(),
            client_id: None,
            authorize: None,
            timeout: Duration::from_secs(30),
            max_timeout: None,
            jitter: 0.1,
            keepalive: KeepAlive::no_content(),
            limits: WaitLimits::default(),
            max_batch: 1,
            retry_after_max: Duration::from_secs(5),
            max_request_body: 16 * 1024,
        }
    }
}

impl LongPollLayerBuilder {
    /// Adds a route pattern: `/` then segments, each a literal or a
    /// `{name}` matching one whole path segment. Repeatable.
    ///
    /// # Panics
    /// When the pattern is malformed (no leading `/`, a segment mixing text
    /// and `{name}`, a repeated name, more than 8 parameters).
    pub fn route(mut self, pattern: &str) -> Self {
        self.routes.push(Route::Pattern(Pattern::parse(pattern)));
        self
    }

    /// Adds a route given by a predicate on the request head. Repeatable.
    /// Polls on such a route need a [`ClientId`] that is not a path parameter.
    pub fn route_if<F>(mut self, predicate: F) -> Self
    where
        F: for<'a> Fn(&RequestHead<'a>) -> bool + Send + Sync + 'static,
    {
        self.routes.push(Route::Predicate(Arc::new(predicate)));
        self
    }

    /// Where the client id comes from (default: the only `{param}` of the
    /// first route, which every route must have).
    pub fn client_id(mut self, client_id: ClientId) -> Self {
        self.client_id = Some(client_id);
        self
    }

    /// Decides, for every poll, whether its request may read the events of
    /// its client id: `f` gets the request head (its extensions hold what
    /// an authentication layer verified) and the id as extracted and
    /// checked. An `Err` is answered `403 Forbidden` with the refusal's
    /// reason, before anything of the id is read. Default: every poll may.
    ///
    /// It is what ties an id taken from the path to the identity an
    /// authentication layer outside this one verified, since polls are
    /// answered before axum's router (and its `route_layer`) sees them:
    ///
    /// ```
    /// use tower_longpoll::{Forbidden, Hub, LongPollLayer};
    ///
    /// #[derive(Clone)]
    /// struct User(String);
    ///
    /// let layer = LongPollLayer::builder(Hub::new())
    ///     .route("/poll/{user}")
    ///     .authorize(|request, id| match request.extensions().get::<User>() {
    ///         Some(User(user)) if user == id => Ok(()),
    ///         _ => Err(Forbidden::because("you may poll only your own id")),
    ///     })
    ///     .build();
    /// ```
    pub fn authorize<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&RequestHead<'a>, &str) -> Result<(), Forbidden> + Send + Sync + 'static,
    {
        self.authorize = Some(Arc::new(f));
        self
    }

    /// How long a poll waits for an event before the keepalive (default
    /// 30 s, at most a day).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// The longest wait a client may ask for with `?timeout=` (default: the
    /// timeout, at most a day).
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = Some(max.min(MAX_TIMEOUT));
        self
    }

    /// Spreads timeouts by this fraction (default 0.1, at most 0.9), so that
    /// clients that polled together do not all come back together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.9)
        } else {
            0.0
        };
        self
    }

    /// The response on timeout (default `204 No Content`).
    pub fn keepalive(mut self, keepalive: KeepAlive) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// The most polls parked at once on one id (default 8, as for a user with
    /// a few tabs); beyond it, `429 Too Many Requests`. Raise it to use one id
    /// as a broadcast channel.
    pub fn max_per_id(mut self, polls: usize) -> Self {
        self.limits = WaitLimits::new(polls, self.limits.global());
        self
    }

    /// The most polls parked at once over all ids (default 100,000); beyond
    /// it, `503 Service Unavailable`. Counted per hub.
    pub fn max_parked(mut self, polls: usize) -> Self {
        self.limits = WaitLimits::new(self.limits.per_id(), polls);
        self
    }

    /// Lets clients ask for up to `max_events` events in one response with
    /// `?batch=N` (default 1: no batching). See `docs/protocol.md` for the
    /// `multipart/mixed` format.
    pub fn batching(mut self, max_events: usize) -> Self {
        self.max_batch = max_events.max(1);
        self
    }

    /// The largest `Retry-After`, in whole seconds, sent with `429` and
    /// `503` answers (default 5 s); each answer picks from 1 s to this.
    pub fn retry_after(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// The most bytes of request body a poll may carry; it is read before
    /// the poll parks, so that a disconnect is seen (default 16 KiB).
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }

    /// Builds the layer.
    ///
    /// # Panics
    /// When no route was given, when no client id was given and the first
    /// pattern route does not have exactly one `{param}`, or when the client
    /// id is a path parameter that some route (or a predicate route) does
    /// not have.
    pub fn build(self) -> LongPollLayer {
        assert!(
            !self.routes.is_empty(),
            "a LongPollLayer needs at least one route"
        );
        let client_id = self.client_id.unwrap_or_else(|| {
            let mut names = self.routes.iter().filter_map(|route| match route {
                Route::Pattern(pattern) => Some(pattern),
                Route::Predicate(_) => None,
            });
            let only = names
                .next()
                .and_then(|pattern| pattern.only_param())
                .unwrap_or_else(|| {
                    panic!("set LongPollLayerBuilder::client_id: the first route does not have exactly one {{param}}")
                });
            ClientId::path(only)
        });
        if let Some(name) = client_id.path_param() {
            for route in self.routes.iter() {
                let has = matches!(route, Route::Pattern(pattern) if pattern.has_param(name));
                assert!(
                    has,
                    "the client id is the path parameter `{name}`, which route {route:?} does not have"
                );
            }
        }
        LongPollLayer {
            shared: Arc::new(Shared {
                hub: self.hub,
                routes: self.routes.into_boxed_slice(),
                client_id,
                authorize: self.authorize,
                timeout: self.timeout,
                max_timeout: self.max_timeout.unwrap_or(self.timeout),
                jitter: self.jitter,
                keepalive: self.keepalive,
                limits: self.limits,
                max_batch: self.max_batch,
                retry_after_max: self.retry_after_max.as_secs().max(1),
                max_request_body: self.max_request_body,
            }),
        }
    }
}

impl LongPollLayer {
    /// A builder for a layer whose polls wait on `hub`: publish through a
    /// clone of the same hub to answer them.
    ///
    /// ```
    /// use tower_longpoll::{Hub, LongPollLayer};
    ///
    /// let hub = Hub::new();
    /// let layer = LongPollLayer::builder(hub.clone())
    ///     .route("/poll/{client}")
    ///     .build();
    /// assert_eq!(layer.hub().stats().parked, 0);
    /// ```
    pub fn builder(hub: Hub) -> LongPollLayerBuilder {
        LongPollLayerBuilder::new(hub)
    }

    /// The hub the layer's polls wait on.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }
}

impl<S> Layer<S> for LongPollLayer {
    type Service = LongPoll<S>;

    fn layer(&self, inner: S) -> LongPoll<S> {
        LongPoll::new(inner, Arc::clone(&self.shared))
    }
}

impl fmt::Debug for LongPollLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl fmt::Debug for LongPollLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongPollLayerBuilder")
            .field("routes", &self.routes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timeouts_spread_both_ways_and_requested_ones_only_shrink() {
        let layer = LongPollLayer::builder(Hub::new())
            .route("/poll/{id}")
            .timeout(Duration::from_secs(10))
            .max_timeout(Duration::from_secs(20))
            .jitter(0.2)
            .build();
        let shared = &layer.shared;
        let (mut below, mut above) = (false, false);
        for _ in 0..1000 {
            let wait = shared.wait_time(None);
            assert!(wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12));
            below |= wait < Duration::from_secs(9);
            above |= wait > Duration::from_secs(11);
            let asked = shared.wait_time(Some(Duration::from_secs(5)));
            assert!(asked >= Duration::from_secs(4) && asked <= Duration::from_secs(5));
            let capped = shared.wait_time(Some(Duration::from_secs(60)));
            assert!(capped >= Duration::from_secs(16) && capped <= Duration::from_secs(20));
        }
        assert!(below && above, "the jitter spreads timeouts");
    }

    #[test]
    fn the_only_param_is_the_default_client_id() {
        let layer = LongPollLayer::builder(Hub::new())
            .route("/poll/{who}")
            .build();
        assert_eq!(layer.shared.client_id.path_param(), Some("who"));
    }

    #[test]
    #[should_panic(expected = "does not have")]
    fn a_path_id_must_be_in_every_route() {
        LongPollLayer::builder(Hub::new())
            .route("/poll/{client}")
            .route("/other/{x}")
            .client_id(ClientId::path("client"))
            .build();
    }

    #[test]
    #[should_panic(expected = "at least one route")]
    fn a_layer_needs_a_route() {
        LongPollLayer::builder(Hub::new()).build();
    }
}
