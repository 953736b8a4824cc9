//! The response future: the inner service's future, an answer made at once,
//! or a parked poll.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::body::{LongPollBody, ReplyBody};
use crate::error::Rejection;
use crate::hub::Count;
use crate::hub::wait::{Wait, WaitOutcome};
use crate::response::{self, Delivery};
use crate::shared::Shared;

pin_project! {
    /// The response future of [`LongPoll`](crate::LongPoll).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        // Boxed: a response inline (over 200 bytes) would size this future,
        // which hyper keeps in a box of its own for as long as a poll waits.
        Reply { response: Option<Box<Response<ReplyBody>>> },
        Poll { poll: Pin<Box<PollFuture>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn reply(response: Response<ReplyBody>) -> Self {
        ResponseFuture {
            kind: Kind::Reply {
                response: Some(Box::new(response)),
            },
        }
    }

    pub(crate) fn poll(poll: Pin<Box<PollFuture>>) -> Self {
        ResponseFuture {
            kind: Kind::Poll { poll },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LongPollBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut kind = self.as_mut().project().kind;
            let response = match kind.as_mut().project() {
                KindProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map(|result| result.map(|response| response.map(LongPollBody::inner)));
                }
                KindProj::Reply { response } => {
                    let reply = response
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    // The response is handed over when this future yields it:
                    // the delivery is recorded now (see `body.rs` for why not
                    // at the body's first poll).
                    ready!(reply.body_mut().poll_handover(cx));
                    let response = *response.take().expect("taken once");
                    return Poll::Ready(Ok(response.map(LongPollBody::reply)));
                }
                KindProj::Poll { poll } => {
                    let mut response = ready!(poll.as_mut().poll(cx));
                    // Most handovers are done at once: such a response goes
                    // out without the box of a reply.
                    if response.body_mut().poll_handover(cx).is_ready() {
                        return Poll::Ready(Ok(response.map(LongPollBody::reply)));
                    }
                    response
                }
            };
            kind.set(Kind::Reply {
                response: Some(Box::new(response)),
            });
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Reply { .. } => "reply",
            Kind::Poll { .. } => "poll",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

/// The least time a poll's request body is given to arrive.
const MIN_BODY_WAIT: Duration = Duration::from_secs(1);

/// How long past its deadline a poll waits for a store's first read, which
/// the keepalive needs (it carries the client's cursor), before it answers
/// `503`: a store that never answers must not hold the poll forever.
pub(crate) const STORE_GRACE: Duration = Duration::from_secs(1);

pub(crate) type DrainFuture = Pin<Box<dyn Future<Output = Result<(), Rejection>> + Send>>;

pin_project! {
    /// A poll between its arrival and its answer.
    ///
    /// Dropping it (hyper does when the client disconnects) unregisters the
    /// waiter and consumes nothing.
    pub(crate) struct PollFuture {
        shared: Arc<Shared>,
        id: Arc<str>,
        head: bool,
        multipart: bool,
        drain: Option<DrainFuture>,
        deadline: Instant,
        #[pin]
        wait: Wait,
        #[pin]
        sleep: Sleep,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        // The deadline passed with the store's first read still pending.
        overdue: bool,
        finished: bool,
    }

    impl PinnedDrop for PollFuture {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.finished {
                this.shared.hub.count(Count::Cancelled);
                tracing::debug!(client_id = &**this.id, "client went away; its poll is cancelled");
            }
        }
    }
}

impl PollFuture {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: Arc<str>,
        head: bool,
        multipart: bool,
        wait: Wait,
        drain: Option<DrainFuture>,
        wait_time: Duration,
    ) -> Self {
        let shutdown = shared.hub.inner.shutdown.clone().cancelled_owned();
        let deadline = Instant::now() + wait_time;
        // A body gets at least a moment to arrive, even for `?timeout=0`;
        // once it is in, the poll's own deadline applies.
        let first_deadline = if drain.is_some() {
            deadline.max(Instant::now() + MIN_BODY_WAIT)
        } else {
            deadline
        };
        PollFuture {
            sleep: tokio::time::sleep_until(first_deadline),
            deadline,
            shared,
            id,
            head,
            multipart,
            drain,
            wait,
            shutdown,
            overdue: false,
            finished: false,
        }
    }
}

impl Future for PollFuture {
    type Output = Response<ReplyBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ReplyBody>> {
        let mut this = self.project();
        let shared = &**this.shared;
        if let Some(drain) = this.drain {
            match drain.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => {
                    *this.drain = None;
                    this.sleep.as_mut().reset(*this.deadline);
                }
                Poll::Ready(Err(rejection)) => {
                    *this.finished = true;
                    return Poll::Ready(shared.refuse(rejection));
                }
                Poll::Pending => {}
            }
        }
        // An event that is there wins over the timer and the shutdown.
        if this.drain.is_none() {
            if let Poll::Ready(outcome) = this.wait.as_mut().poll(cx) {
                *this.finished = true;
                let response = match outcome {
                    WaitOutcome::Events(result) => {
                        tracing::debug!(
                            client_id = &**this.id,
                            events = result.events().len(),
                            gap = result.has_gap(),
                            "poll answered with events"
                        );
                        let delivery = Delivery {
                            hub: &shared.hub,
                            id: this.id,
                            head: *this.head,
                            multipart: *this.multipart,
                        };
                        response::events(delivery, result)
                    }
                    WaitOutcome::Empty => {
                        shared.hub.count(Count::TimedOut);
                        response::keepalive(&shared.keepalive, this.wait.position())
                    }
                    WaitOutcome::Failed(err) => shared.wait_failed(this.id, err),
                };
                return Poll::Ready(response);
            }
        }
        if this.shutdown.poll(cx).is_ready() {
            *this.finished = true;
            return Poll::Ready(shared.refuse(Rejection::ShuttingDown));
        }
        // Once overdue, the deadline has passed: the keepalive goes as soon as
        // the first read gives it a position, without waiting for the grace.
        if !*this.overdue {
            ready!(this.sleep.as_mut().poll(cx));
        }
        if this.drain.is_some() {
            *this.finished = true;
            return Poll::Ready(shared.refuse(Rejection::BodyTimeout));
        }
        if this.wait.position().is_none() {
            // The first read of a slow store has not answered yet: without it
            // the keepalive could not carry the client's cursor. It gets a
            // grace; a store that has not answered by then is unavailable.
            if !*this.overdue {
                *this.overdue = true;
                this.sleep.as_mut().reset(*this.deadline + STORE_GRACE);
            }
            // Registers the timer with this task.
            ready!(this.sleep.as_mut().poll(cx));
            *this.finished = true;
            tracing::warn!(client_id = &**this.id, grace = ?STORE_GRACE,
                "the store did not answer a poll's first read by its deadline");
            return Poll::Ready(shared.refuse(Rejection::StoreUnavailable));
        }
        *this.finished = true;
        shared.hub.count(Count::TimedOut);
        tracing::trace!(client_id = &**this.id, "poll timed out");
        Poll::Ready(response::keepalive(&shared.keepalive, this.wait.position()))
    }
}

/// Reads and discards the body of a poll, so that hyper watches the
/// connection for a disconnect while the poll is parked.
pub(crate) fn drain_body<B>(body: B, limit: usize) -> DrainFuture
where
    B: Body + Send + 'static,
{
    Box::pin(Draining {
        body: Box::pin(body),
        read: 0,
        limit,
    })
}

struct Draining<B> {
    body: Pin<Box<B>>,
    read: usize,
    limit: usize,
}

impl<B: Body> Future for Draining<B> {
    type Output = Result<(), Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match ready!(self.body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(_)) => return Poll::Ready(Err(Rejection::BodyUnreadable)),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.read += bytes::Buf::remaining(data);
                        if self.read > self.limit {
                            return Poll::Ready(Err(Rejection::BodyTooLarge { limit: self.limit }));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::PollFuture;

    /// Every parked poll is one `PollFuture` in a box of its own: kept within
    /// 512 bytes, it takes jemalloc's 512-byte class rather than the 640
    /// (docs/benchmarks.md, memory per held poll).
    #[test]
    fn a_parked_poll_fits_in_512_bytes() {
        let size = std::mem::size_of::<PollFuture>();
        assert!(size <= 512, "PollFuture is {size} bytes");
    }
}
