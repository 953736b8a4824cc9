//! The response body of the layer: the inner service's body, untouched, or
//! a body the layer made, which commits an event's delivery as it is handed
//! to the connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::cursor::Cursor;
use crate::hub::{Counters, Hub};
use crate::store::{StoreError, StoreFuture};

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
/// of its cursor as the id's delivery position just before the chunk is
/// handed over.
pub(crate) struct ReplyBody {
    data: Option<Bytes>,
    commit: Option<Commit>,
}

/// Moves the delivery position of an id once its event is handed over.
pub(crate) struct Commit {
    hub: Hub,
    id: Arc<str>,
    cursor: Cursor,
    pending: Option<StoreFuture<Result<(), StoreError>>>,
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
        if let Some(commit) = &mut self.commit {
            ready!(commit.poll_commit(cx));
            self.commit = None;
        }
        Poll::Ready(self.data.take().map(Frame::data))
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
        let inner = &self.hub.inner;
        let pending = self
            .pending
            .get_or_insert_with(|| inner.store.commit(&self.id, self.cursor));
        if let Err(err) = ready!(Pin::new(pending).poll(cx)) {
            // The event goes out all the same: a client without a cursor
            // may then see it twice, never lose it.
            tracing::warn!(client_id = &*self.id, cursor = %self.cursor, error = %err,
                "could not record a delivery");
        }
        self.done = true;
        Counters::add(&inner.counters.delivered);
        tracing::debug!(client_id = &*self.id, cursor = %self.cursor, "event delivered");
        Poll::Ready(())
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        if !self.done {
            Counters::add(&self.hub.inner.counters.cancelled);
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
            Kind::Reply { reply } => reply.data.is_none() && reply.commit.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            // An empty event must still be polled, or its delivery is never
            // committed: with an exact size of 0, HTTP/1 skips the body.
            Kind::Reply { reply } if reply.data.is_none() && reply.commit.is_some() => {
                SizeHint::default()
            }
            Kind::Reply { reply } => {
                SizeHint::with_exact(reply.data.as_ref().map_or(0, |d| d.len() as u64))
            }
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
