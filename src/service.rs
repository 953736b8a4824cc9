//! The service: pass everything through, except polls.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::error::Rejection;
use crate::future::{PollFuture, ResponseFuture, drain_body};
use crate::hub::Count;
use crate::hub::wait::Wait;
use crate::params::{self, Since};
use crate::response::{self, Delivery};
use crate::route::RequestHead;
use crate::shared::Shared;
use crate::store::{ReadFrom, StoreError};

/// Long-polling middleware: answers the polls of its routes itself and passes
/// every other request to the inner service untouched.
///
/// Made by [`LongPollLayer`](crate::LongPollLayer). It keeps the inner
/// service's error type; the layer's own answers (events, keepalives, bad
/// input) are responses, never errors.
pub struct LongPoll<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> LongPoll<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        LongPoll { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for LongPoll<S> {
    fn clone(&self) -> Self {
        LongPoll {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LongPoll<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongPoll")
            .field("inner", &self.inner)
            .field("layer", &*self.shared)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LongPoll<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + Send + 'static,
{
    type Response = Response<crate::LongPollBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the inner service's: a poll does not call it, but any
        // request might be one that does.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        // The id is taken while the route's path parameters borrow the
        // request; the request is moved only after.
        let id = match shared.match_route(&request) {
            None => return ResponseFuture::inner(self.inner.call(request)),
            Some(_) if !matches!(*request.method(), Method::GET | Method::HEAD) => {
                return ResponseFuture::reply(shared.refuse(Rejection::MethodNotAllowed));
            }
            Some(params) => {
                let head = RequestHead::of(&request, params);
                let id = shared.client_id.extract(&head, shared.hub.max_id_len());
                if let (Ok(id), Some(authorize)) = (&id, &shared.authorize) {
                    if let Err(forbidden) = authorize(&head, id) {
                        return ResponseFuture::reply(
                            shared.refuse(Rejection::Forbidden(forbidden)),
                        );
                    }
                }
                id
            }
        };
        start(shared, request, id)
    }
}

/// Checks a poll and tries to answer it at once from the log; otherwise
/// makes the future that parks it.
fn start<B, F>(
    shared: &Arc<Shared>,
    request: Request<B>,
    id: Result<Arc<str>, Rejection>,
) -> ResponseFuture<F>
where
    B: Body + Send + 'static,
{
    let head = request.method() == Method::HEAD;
    let id = match id {
        Ok(id) => id,
        Err(Rejection::MissingIdentity) => {
            tracing::error!(
                extension = shared.client_id.extension_type(),
                "a poll reached the long-poll layer without the request extension its client id comes from: put the layer that inserts it outside the long-poll layer"
            );
            return ResponseFuture::reply(shared.refuse(Rejection::MissingIdentity));
        }
        Err(rejection) => return ResponseFuture::reply(shared.refuse(rejection)),
    };
    let params = match params::parse(request.uri().query(), request.headers()) {
        Ok(params) => params,
        Err(rejection) => return ResponseFuture::reply(shared.refuse(rejection)),
    };
    let hub = &shared.hub;
    if hub.is_shut_down() {
        return ResponseFuture::reply(shared.refuse(Rejection::ShuttingDown));
    }
    let multipart = shared.max_batch > 1 && params.batch.is_some();
    let max_events = if multipart {
        params.batch.unwrap_or(1).min(shared.max_batch)
    } else {
        1
    };
    let from = match params.cursor {
        None => ReadFrom::Delivered,
        Some(Since::Cursor(cursor)) => ReadFrom::Cursor(cursor),
        Some(Since::Start) => ReadFrom::Start,
    };
    // A client that asks for no wait only reads: it never takes a parking slot.
    let park = params.timeout != Some(Duration::ZERO);
    let wait_time = shared.wait_time(params.timeout);
    let body = request.into_body();
    let limits = shared.limits;

    let (wait, drain) = if body.is_end_stream() {
        // Most polls carry no body: try the log at once, without parking.
        match hub
            .inner
            .store
            .read(&id, from, max_events)
            .into_value_or_pending()
        {
            Ok(Ok(result)) if !result.is_empty() => {
                let delivery = Delivery {
                    hub,
                    id: &id,
                    head,
                    multipart,
                };
                return ResponseFuture::reply(response::events(delivery, result));
            }
            Ok(Ok(result)) if !park => {
                hub.count(Count::TimedOut);
                let position = Some(result.position());
                return ResponseFuture::reply(response::keepalive(&shared.keepalive, position));
            }
            Ok(Ok(result)) => {
                let position = result.position();
                let wait =
                    Wait::after_empty_read(hub.clone(), id.clone(), max_events, limits, position);
                (wait, None)
            }
            Ok(Err(StoreError::TooManyIds { .. })) => {
                return ResponseFuture::reply(shared.refuse(Rejection::TooManyIds));
            }
            Ok(Err(err)) => {
                tracing::warn!(client_id = &*id, error = %err, "reading the event log failed");
                return ResponseFuture::reply(shared.refuse(Rejection::StoreUnavailable));
            }
            Err(pending) => {
                let wait = Wait::after_pending_read(
                    hub.clone(),
                    id.clone(),
                    from,
                    max_events,
                    limits,
                    park,
                    pending,
                );
                (wait, None)
            }
        }
    } else {
        // The log is read only once the body is in: reading it before could
        // hand out a position that moved meanwhile.
        let wait = Wait::new(hub.clone(), id.clone(), from, max_events, limits, park);
        (wait, Some(drain_body(body, shared.max_request_body)))
    };
    ResponseFuture::poll(Box::pin(PollFuture::new(
        Arc::clone(shared),
        id,
        head,
        multipart,
        wait,
        drain,
        wait_time,
    )))
}
