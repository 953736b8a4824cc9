//! The response body of the layer: the inner service's body, untouched, or
//! a body the layer made, which commits an event's delivery as it is handed
//! to the connection; and [`DeliveryBody`], the same delivery body for code
//! that answers with events read by [`Hub::wait_for`].
//!
//! An event is committed as its response is handed over: the layer's
//! response future records the delivery before it yields the response.
//! hyper never polls an empty body (nor the body of a `204`, a `304` or a
//! `HEAD` answer), and a body whose bytes are ready at its first poll goes
//! out in one write with the head.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::cursor::Cursor;
use crate::event::StoredEvent;
use crate::hub::{Count, Hub};
use crate::store::{PendingStore, StoreError};

pin_project! {
    /// The response body of a [`LongPoll`](crate::LongPoll) service: either
    /// the inner service's body, passed through untouched, or a response the
    /// layer made (an event, a keepalive, an error).
    pub struct LongPollBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Reply { reply: ReplyBody },
    }
}

impl<B> LongPollBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        LongPollBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn reply(reply: ReplyBody) -> Self {
        LongPollBody {
            kind: Kind::Reply { reply },
        }
    }
}

/// A body made by the layer: a single chunk, and, for an event, the commit
/// of its cursor as the id's delivery position, made as the response is
/// handed over (or, for a `DeliveryBody` its owner did not commit, at the
/// body's first poll).
pub(crate) struct ReplyBody {
    data: Option<Bytes>,
    commit: Option<Commit>,
}

/// Moves the delivery position of an id once its event is handed over.
pub(crate) struct Commit {
    hub: Hub,
    id: Arc<str>,
    cursor: Cursor,
    // Only a commit that has to wait is kept, boxed: inline, the store's
    // answer would size every response body, and hyper reserves a box of
    // that size on each connection for as long as it lives.
    pending: Option<PendingStore<Result<(), StoreError>>>,
    done: bool,
}

impl ReplyBody {
    pub(crate) fn empty() -> Self {
        ReplyBody {
            data: None,
            commit: None,
        }
    }

    pub(crate) fn bytes(data: Bytes) -> Self {
        ReplyBody {
            data: (!data.is_empty()).then_some(data),
            commit: None,
        }
    }

    pub(crate) fn event(data: Bytes, commit: Commit) -> Self {
        ReplyBody {
            data: (!data.is_empty()).then_some(data),
            commit: Some(commit),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        // Committed at the hand-over already, unless the owner of a
        // `DeliveryBody` did not commit it.
        ready!(self.poll_commit(cx));
        Poll::Ready(self.data.take().map(Frame::data))
    }

    /// Records the delivery now, if there is one still to record.
    pub(crate) fn poll_commit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(commit) = &mut self.commit {
            ready!(commit.poll_commit(cx));
            self.commit = None;
        }
        Poll::Ready(())
    }

    /// Called as the response is handed over: the event is committed now.
    /// An event without bytes must be (hyper will not poll its body), and
    /// one with bytes then has them ready at the body's first poll, so hyper
    /// writes the head and the bytes together: a body that waited for a
    /// commit's round trip (Redis) made hyper flush the head alone, and
    /// Nagle's algorithm held the bytes until the client acknowledged it (up
    /// to 40 ms on a socket without TCP_NODELAY, as `axum::serve` leaves
    /// them).
    pub(crate) fn poll_handover(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_commit(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.commit.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.data {
            // Not committed yet and nothing to send: an exact size of 0 would
            // make hyper skip the body, and with it the commit. Only a
            // `DeliveryBody` whose owner did not commit it gets here.
            None if self.commit.is_some() => SizeHint::default(),
            data => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Commit {
    pub(crate) fn new(hub: Hub, id: Arc<str>, cursor: Cursor) -> Self {
        Commit {
            hub,
            id,
            cursor,
            pending: None,
            done: false,
        }
    }

    fn poll_commit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let result = match &mut self.pending {
            Some(pending) => ready!(pending.as_mut().poll(cx)),
            None => {
                let commit = self.hub.inner.store.commit(&self.id, self.cursor);
                match commit.into_value_or_pending() {
                    Ok(result) => result,
                    Err(pending) => ready!(self.pending.insert(pending).as_mut().poll(cx)),
                }
            }
        };
        if let Err(err) = result {
            // The event goes out all the same: a client without a cursor
            // may then see it twice, never lose it.
            tracing::warn!(client_id = &*self.id, cursor = %self.cursor, error = %err,
                "could not record a delivery");
        }
        self.done = true;
        self.hub.count(Count::Delivered);
        tracing::debug!(client_id = &*self.id, cursor = %self.cursor, "event delivered");
        Poll::Ready(())
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        if !self.done {
            self.hub.count(Count::Cancelled);
            tracing::debug!(client_id = &*self.id, cursor = %self.cursor,
                "connection dropped an event response before taking it; the event stays for the next poll");
        }
    }
}

impl<B> Body for LongPollBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Reply { reply } => reply.poll_frame(cx).map(|frame| frame.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Reply { reply } => reply.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Reply { reply } => reply.size_hint(),
        }
    }
}

impl<B> fmt::Debug for LongPollBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("LongPollBody::Inner"),
            Kind::Reply { reply } => f
                .debug_struct("LongPollBody::Reply")
                .field("len", &reply.data.as_ref().map_or(0, Bytes::len))
                .field("commits", &reply.commit.is_some())
                .finish(),
        }
    }
}

/// The body of a response that delivers an event read with
/// [`Hub::wait_for`]: the event's bytes, and the commit of its cursor as the
/// id's delivery position, as the layer's own event responses do.
///
/// An event with bytes is committed when the connection first polls this
/// body for them, just before they are handed over. A response whose body
/// the connection never polls records nothing by itself: hyper skips the
/// body of a `204`, a `304`, a `HEAD` answer and any empty body. For such a
/// response, [`commit`](DeliveryBody::commit) the body as you hand the
/// response over, or clients that poll without a cursor get the same event
/// again and again.
///
/// ```
/// use http::Response;
/// use tower_longpoll::store::ReadFrom;
/// use tower_longpoll::{DeliveryBody, Event, Hub, WaitLimits};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new();
/// hub.publish("orders", Event::new("")).await?;
/// let (index, read) = hub
///     .wait_for([("orders", ReadFrom::Delivered)], 1, WaitLimits::default())
///     .await?;
/// let stored = &read.events()[0];
/// let mut body = DeliveryBody::new(&hub, "orders", stored);
/// if stored.event.data().is_empty() {
///     // hyper will not poll an empty body: record the delivery now.
///     body.commit().await;
/// }
/// let response = Response::new(body);
/// # let _ = (index, response);
/// assert_eq!(hub.stats().delivered, 1);
/// # Ok(())
/// # }
/// ```
pub struct DeliveryBody {
    reply: ReplyBody,
}

impl DeliveryBody {
    /// The body delivering `stored`, an event read from `hub` for `id`.
    pub fn new(hub: &Hub, id: &str, stored: &StoredEvent) -> Self {
        let commit = Commit::new(hub.clone(), Arc::from(id), stored.cursor);
        DeliveryBody {
            reply: ReplyBody::event(stored.event.data().clone(), commit),
        }
    }

    /// Records the delivery now (once: later calls, and the body's first
    /// poll, record nothing more). Resolves when the store has recorded it;
    /// a store that fails is logged, and the event may then be delivered
    /// again to a client without a cursor, never lost.
    pub async fn commit(&mut self) {
        std::future::poll_fn(|cx| self.reply.poll_commit(cx)).await;
    }

    /// Whether the delivery has been recorded.
    pub fn is_committed(&self) -> bool {
        self.reply.commit.is_none()
    }
}

impl Body for DeliveryBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.reply.poll_frame(cx).map(|frame| frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.reply.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.reply.size_hint()
    }
}

impl fmt::Debug for DeliveryBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryBody")
            .field("len", &self.reply.data.as_ref().map_or(0, Bytes::len))
            .field("committed", &self.is_committed())
            .finish()
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::LongPollBody;

    /// hyper keeps a box the size of the response body on every connection
    /// for its whole life: at 96 bytes, jemalloc's 96-byte class, not 112.
    #[test]
    fn a_response_body_fits_in_96_bytes() {
        type Inner = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;
        let size = std::mem::size_of::<Option<LongPollBody<Inner>>>();
        assert!(size <= 96, "Option<LongPollBody> is {size} bytes");
    }
}
