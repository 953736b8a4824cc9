use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The result of a [`Store`](super::Store) call: a value known at once, or a
/// boxed future for a store that has to wait for a server.
///
/// The in-memory store always answers at once, so its calls cost no
/// allocation; the hub takes such values without polling
/// ([`StoreFuture::into_ready`]).
#[must_use = "a store future does nothing unless polled"]
pub struct StoreFuture<T> {
    state: State<T>,
}

/// A store call that has to wait, as a store returned it.
pub(crate) type PendingStore<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

enum State<T> {
    Ready(Option<T>),
    Pending(PendingStore<T>),
}

// No field is ever pinned in place: the value is moved out and the boxed
// future is pinned by its box.
impl<T> Unpin for StoreFuture<T> {}

impl<T> StoreFuture<T> {
    /// A future that resolves to `value` at its first poll.
    pub fn ready(value: T) -> Self {
        StoreFuture {
            state: State::Ready(Some(value)),
        }
    }

    /// Wraps a future that has to wait.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = T> + Send + 'static,
    {
        StoreFuture {
            state: State::Pending(Box::pin(future)),
        }
    }

    /// The value, if it is known without waiting; otherwise the boxed
    /// future alone, which a caller that keeps it (a parked poll does) holds
    /// in two words rather than in a slot as large as the value.
    pub(crate) fn into_value_or_pending(self) -> Result<T, PendingStore<T>> {
        match self.state {
            State::Ready(Some(value)) => Ok(value),
            State::Ready(None) => panic!("StoreFuture taken after it completed"),
            State::Pending(future) => Err(future),
        }
    }

    /// The value, if it is known without waiting; otherwise the future back.
    pub fn into_ready(self) -> Result<T, Self> {
        match self.state {
            State::Ready(Some(value)) => Ok(value),
            state => Err(StoreFuture { state }),
        }
    }
}

impl<T> Future for StoreFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.state {
            State::Ready(value) => {
                Poll::Ready(value.take().expect("StoreFuture polled after it completed"))
            }
            State::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Pending(_) => "pending",
        };
        f.debug_struct("StoreFuture")
            .field("state", &state)
            .finish()
    }
}
