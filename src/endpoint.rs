//! The layer as a service of its own, for a route of axum's router.
//!
//! [`LongPollLayer`] catches its polls before the router, so route-level
//! middleware (`route_layer`), extractors and `MatchedPath` never see them.
//! [`LongPollLayer::endpoint`] gives the same polls as an ordinary service to
//! mount on the route: the router matches it first, then its route layers run,
//! then the poll is answered with exactly the layer's semantics.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::{LongPoll, LongPollLayer};

/// A long-poll route as a service: [`LongPollLayer::endpoint`].
pub type LongPollEndpoint = LongPoll<NotAPoll>;

/// What a [`LongPollEndpoint`] does with a request its route patterns do
/// not match: `404`. Mounted where the router sends only its polls, it is
/// reached only when the layer's patterns and the router's route disagree.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotAPoll;

impl<B> Service<Request<B>> for NotAPoll {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        tracing::warn!(
            path = request.uri().path(),
            "a long-poll endpoint got a request none of its route patterns match"
        );
        let mut response = Response::new("not a long-poll route\n".to_owned());
        *response.status_mut() = StatusCode::NOT_FOUND;
        ready(Ok(response))
    }
}

impl LongPollLayer {
    /// This layer's polls as a service to mount on a router's route, instead
    /// of a layer around it.
    ///
    /// Give the builder the same pattern as the route. Polls then go through
    /// the router like any request: `MatchedPath` is set, `route_layer`
    /// middleware (authentication, say) runs before the poll is read, and
    /// they show up under their route in traces. Everything else the layer
    /// does — waiting, keepalives, cursors, limits, `405` for other methods,
    /// the `authorize` hook — is the same.
    ///
    /// ```
    /// use axum::Router;
    /// use tower_longpoll::{Hub, LongPollLayer};
    ///
    /// let hub = Hub::new();
    /// let polls = LongPollLayer::builder(hub.clone())
    ///     .route("/poll/{client}")
    ///     .build();
    /// let app: Router = Router::new().route_service("/poll/{client}", polls.endpoint());
    /// ```
    pub fn endpoint(&self) -> LongPollEndpoint {
        self.layer(NotAPoll)
    }
}
