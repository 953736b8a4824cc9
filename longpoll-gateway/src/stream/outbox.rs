//! Between a stream's session and hyper: the bytes written but not yet taken
//! by the connection, bounded.
//!
//! The session writes; the [`StreamBody`] hands the bytes to hyper when it
//! polls, which it does only as fast as the client reads. What the upstream
//! sends (the first response, next-link pages) waits for room; what is
//! published may not wait (every stream on the channel would be held back
//! by its slowest client), so a stream whose unread bytes would pass the
//! bound is given up: its queue is freed at once and its connection closed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::reply::BoxError;

/// The writing side.
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The body of a held stream.
pub struct StreamBody {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Woken when the body takes bytes.
    drained: Notify,
    /// Cancelled when hyper drops the body: the client went away (or the
    /// stream ended and the connection took all of it).
    dropped: CancellationToken,
    limit: usize,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    pending: usize,
    state: End,
    reader: Option<Waker>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum End {
    #[default]
    Open,
    /// Ends cleanly once the queue is drained.
    Finished,
    /// Ends with an error at the next poll: the connection is aborted.
    Aborted,
}

/// Why a write did not go through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client has not read enough: the bytes would pass the bound.
    Full,
    /// The client went away, or the stream already ended.
    Closed,
}

/// A stream's two ends; at most `limit` bytes wait for the client.
pub fn outbox(limit: usize) -> (Outbox, StreamBody) {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        drained: Notify::new(),
        dropped: CancellationToken::new(),
        limit: limit.max(1),
    });
    (
        Outbox {
            shared: Arc::clone(&shared),
        },
        StreamBody { shared },
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Outbox {
    /// Queues `bytes` if they fit within the bound.
    pub fn push(&self, bytes: Bytes) -> Result<(), Refused> {
        let mut queue = self.shared.lock();
        if queue.state != End::Open || self.shared.dropped.is_cancelled() {
            return Err(Refused::Closed);
        }
        if queue.pending + bytes.len() > self.shared.limit {
            return Err(Refused::Full);
        }
        queue.enqueue(bytes);
        Ok(())
    }

    /// Queues `bytes` once the client has read enough for them to fit (a
    /// chunk larger than the bound waits for an empty queue).
    pub async fn push_when_room(&self, bytes: Bytes) -> Result<(), Refused> {
        if bytes.is_empty() {
            return Ok(());
        }
        loop {
            let drained = self.shared.drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            {
                let mut queue = self.shared.lock();
                if queue.state != End::Open || self.shared.dropped.is_cancelled() {
                    return Err(Refused::Closed);
                }
                if queue.pending == 0 || queue.pending + bytes.len() <= self.shared.limit {
                    queue.enqueue(bytes);
                    return Ok(());
                }
            }
            tokio::select! {
                () = drained => {}
                () = self.shared.dropped.cancelled() => return Err(Refused::Closed),
            }
        }
    }

    /// Ends the body cleanly once what is queued has been read.
    pub fn finish(&self) {
        let mut queue = self.shared.lock();
        if queue.state == End::Open {
            queue.state = End::Finished;
        }
        queue.wake();
    }

    /// Ends the body with an error: hyper aborts the response (a reset on
    /// HTTP/2, a closed connection on HTTP/1.1). The queued bytes are freed
    /// now, whether or not hyper polls again.
    pub fn abort(&self) {
        let mut queue = self.shared.lock();
        queue.state = End::Aborted;
        queue.chunks = VecDeque::new();
        queue.pending = 0;
        queue.wake();
    }

    /// Resolves when hyper has dropped the body.
    pub async fn dropped(&self) {
        self.shared.dropped.cancelled().await;
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // A session that ends without saying how ends the body cleanly.
        self.finish();
    }
}

impl Queue {
    fn enqueue(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.pending += bytes.len();
        self.chunks.push_back(bytes);
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut queue = self.shared.lock();
        if queue.state == End::Aborted {
            return Poll::Ready(Some(Err("the stream's client did not read".into())));
        }
        if let Some(chunk) = queue.chunks.pop_front() {
            queue.pending -= chunk.len();
            drop(queue);
            self.shared.drained.notify_waiters();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if queue.state == End::Finished {
            return Poll::Ready(None);
        }
        queue.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let queue = self.shared.lock();
        queue.state == End::Finished && queue.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.shared.dropped.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn bytes_flow_and_the_bound_holds() {
        let (outbox, mut body) = outbox(10);
        outbox.push(Bytes::from_static(b"12345")).unwrap();
        outbox.push(Bytes::from_static(b"67890")).unwrap();
        assert_eq!(outbox.push(Bytes::from_static(b"x")), Err(Refused::Full));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "12345");
        outbox.push(Bytes::from_static(b"abc")).unwrap();
        // Upstream bytes wait for room instead.
        let waiting = outbox.push_when_room(Bytes::from_static(b"waits"));
        let mut waiting = std::pin::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting.as_mut())
                .await
                .is_err()
        );
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "67890");
        waiting.await.unwrap();
        outbox.finish();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "abcwaits");
    }

    #[tokio::test]
    async fn an_aborted_stream_frees_its_queue_and_errs() {
        let (outbox, mut body) = outbox(100);
        outbox.push(Bytes::from(vec![0; 90])).unwrap();
        outbox.abort();
        assert_eq!(outbox.shared.lock().pending, 0);
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(outbox.push(Bytes::from_static(b"x")), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_dropped_body_is_seen_by_the_writer() {
        let (outbox, body) = outbox(4);
        outbox.push(Bytes::from_static(b"full")).unwrap();
        let waiting = outbox.push_when_room(Bytes::from_static(b"more"));
        drop(body);
        assert_eq!(waiting.await, Err(Refused::Closed));
        outbox.dropped().await;
    }
}
