//! Waiting on the hub directly, outside the layer: [`Hub::wait_for`].
//!
//! The same [`Wait`] machinery as a parked poll, for code that holds
//! requests its own way (the GRIP gateway holds a request on several
//! channels at once and answers it with a response it builds itself).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Hub;
use super::wait::{Wait, WaitError, WaitLimits, WaitOutcome};
use crate::id::check_id;
use crate::store::{ReadFrom, ReadResult};

/// The future of [`Hub::wait_for`]: resolves with the events of the first
/// id that has some after its position, as `(index of the id, read)`.
///
/// Dropping it unregisters every waiter at once and consumes nothing.
#[must_use = "a wait does nothing unless polled"]
pub struct WaitFor {
    state: State,
}

enum State {
    Waiting {
        // Boxed one by one: a `Wait` is pinned while it waits.
        waits: Vec<Pin<Box<Wait>>>,
        shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    },
    Failed(Option<WaitError>),
}

impl Hub {
    /// Waits until one of `ids` has events after its position, and reads up
    /// to `max_events` (at least 1) of them.
    ///
    /// Each id comes with where to read from: [`ReadFrom::Cursor`] waits for
    /// what comes after that cursor (at once if the log already has it);
    /// [`ReadFrom::Delivered`] takes the id's delivery position at the first
    /// read and then waits for what comes after *that* position, as a
    /// cursor-less poll does. The wait reads, registers and reads again
    /// before it parks, in the same order as the layer's polls, so an event
    /// published at any moment is either read or wakes the wait.
    ///
    /// The future resolves with `(index, read)`: the index in `ids` of the
    /// first id found with events (ids are checked in their order) and what
    /// was read. Nothing is consumed: to move a delivery position, call
    /// [`Store::commit`](crate::store::Store::commit) on
    /// [`Hub::store`] once the events were handed over. The wait has no
    /// timeout of its own (wrap it in `tokio::time::timeout`); dropping it
    /// unregisters it at once. It ends with [`WaitError::ShuttingDown`] when
    /// the hub shuts down, and never resolves when `ids` is empty.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_longpoll::store::ReadFrom;
    /// use tower_longpoll::{Event, Hub, WaitLimits};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::new();
    /// let wait = hub.wait_for(
    ///     [("news", ReadFrom::Delivered), ("sports", ReadFrom::Delivered)],
    ///     1,
    ///     WaitLimits::default(),
    /// );
    /// let publisher = hub.clone();
    /// tokio::spawn(async move { publisher.publish("sports", Event::new("goal")).await });
    /// let (index, read) = tokio::time::timeout(Duration::from_secs(5), wait).await??;
    /// assert_eq!(index, 1);
    /// assert_eq!(read.events()[0].event.data().as_ref(), b"goal");
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for<I, S>(&self, ids: I, max_events: usize, limits: WaitLimits) -> WaitFor
    where
        I: IntoIterator<Item = (S, ReadFrom)>,
        S: AsRef<str>,
    {
        let max_events = max_events.max(1);
        let mut waits = Vec::new();
        for (id, from) in ids {
            let id = id.as_ref();
            if let Err(invalid) = check_id(id, self.max_id_len()) {
                return WaitFor {
                    state: State::Failed(Some(WaitError::InvalidId(invalid))),
                };
            }
            let id: Arc<str> = Arc::from(id);
            waits.push(Box::pin(Wait::new(
                self.clone(),
                id,
                from,
                max_events,
                limits,
                true,
            )));
        }
        let shutdown = Box::pin(self.inner.shutdown.clone().cancelled_owned());
        WaitFor {
            state: State::Waiting { waits, shutdown },
        }
    }
}

impl Future for WaitFor {
    type Output = Result<(usize, ReadResult), WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (waits, shutdown) = match &mut self.state {
            State::Failed(err) => {
                return Poll::Ready(Err(err.take().expect("WaitFor polled after completion")));
            }
            State::Waiting { waits, shutdown } => (waits, shutdown),
        };
        // Every wait is polled at each wake-up, so each one has registered
        // its signal with this task; the first with events wins.
        let mut outcome = None;
        for (index, wait) in waits.iter_mut().enumerate() {
            if let Poll::Ready(ready) = wait.as_mut().poll(cx) {
                outcome = Some((index, ready));
                break;
            }
        }
        let result = match outcome {
            Some((index, WaitOutcome::Events(read))) => Ok((index, read)),
            Some((_, WaitOutcome::Failed(err))) => Err(err),
            Some((_, WaitOutcome::Empty)) => unreachable!("these waits park; they never end empty"),
            None => {
                if shutdown.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Err(WaitError::ShuttingDown)
            }
        };
        // Leave the registry now, not when the future is dropped.
        waits.clear();
        self.state = State::Failed(None);
        match result {
            Ok(found) => Poll::Ready(Ok(found)),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl fmt::Debug for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = match &self.state {
            State::Waiting { waits, .. } => waits.len(),
            State::Failed(_) => 0,
        };
        f.debug_struct("WaitFor").field("ids", &ids).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Event;
    use crate::cursor::Cursor;
    use crate::id::InvalidId;

    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(future).poll(&mut cx)
    }

    #[tokio::test]
    async fn an_event_already_kept_is_read_at_once() {
        let hub = Hub::new();
        let first = hub.publish("a", Event::new("one")).await.unwrap();
        hub.publish("a", Event::new("two")).await.unwrap();
        let mut wait = hub.wait_for([("a", ReadFrom::Cursor(first))], 8, WaitLimits::default());
        let Poll::Ready(Ok((0, read))) = poll_once(&mut wait) else {
            panic!("the kept event is read at once");
        };
        assert_eq!(read.position(), first);
        assert_eq!(read.events().len(), 1);
        assert_eq!(read.events()[0].event.data().as_ref(), b"two");
        assert_eq!(hub.stats().parked, 0);
    }

    #[tokio::test]
    async fn the_first_id_with_an_event_wins_and_every_waiter_leaves() {
        let hub = Hub::new();
        let mut wait = hub.wait_for(
            [("a", ReadFrom::Delivered), ("b", ReadFrom::Delivered)],
            1,
            WaitLimits::default(),
        );
        assert!(poll_once(&mut wait).is_pending());
        assert_eq!(hub.stats().parked, 2);
        hub.publish("b", Event::new("for b")).await.unwrap();
        let (index, read) = tokio::time::timeout(Duration::from_secs(5), &mut wait)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(index, 1);
        assert_eq!(read.events()[0].event.data().as_ref(), b"for b");
        assert_eq!(hub.stats().parked, 0, "both waiters left on completion");
    }

    #[tokio::test]
    async fn dropping_a_wait_unregisters_it_and_consumes_nothing() {
        let hub = Hub::new();
        let mut wait = hub.wait_for([("a", ReadFrom::Delivered)], 1, WaitLimits::default());
        assert!(poll_once(&mut wait).is_pending());
        assert_eq!(hub.stats().parked, 1);
        drop(wait);
        assert_eq!(hub.stats().parked, 0);
        hub.publish("a", Event::new("kept")).await.unwrap();
        let mut again = hub.wait_for([("a", ReadFrom::Delivered)], 1, WaitLimits::default());
        let Poll::Ready(Ok((0, read))) = poll_once(&mut again) else {
            panic!("the event stayed for the next wait");
        };
        assert_eq!(read.events()[0].event.data().as_ref(), b"kept");
    }

    #[tokio::test]
    async fn a_cursorless_wait_waits_after_the_position_it_arrived_with() {
        let hub = Hub::new();
        let mut wait = hub.wait_for([("a", ReadFrom::Delivered)], 1, WaitLimits::default());
        assert!(poll_once(&mut wait).is_pending());
        let cursor = hub.publish("a", Event::new("x")).await.unwrap();
        // Another reader committing the event first must not hide it.
        hub.store().commit("a", cursor).await.unwrap();
        let (_, read) = tokio::time::timeout(Duration::from_secs(5), &mut wait)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.events()[0].cursor, cursor);
    }

    #[tokio::test]
    async fn limits_refuse_and_free_their_places() {
        let hub = Hub::new();
        let limits = WaitLimits::new(1, 2);
        let mut one = hub.wait_for([("a", ReadFrom::Delivered)], 1, limits);
        assert!(poll_once(&mut one).is_pending());
        let mut per_id = hub.wait_for([("a", ReadFrom::Delivered)], 1, limits);
        assert!(matches!(
            poll_once(&mut per_id),
            Poll::Ready(Err(WaitError::TooManyForId))
        ));
        let mut global = hub.wait_for(
            [("b", ReadFrom::Delivered), ("c", ReadFrom::Delivered)],
            1,
            limits,
        );
        assert!(matches!(
            poll_once(&mut global),
            Poll::Ready(Err(WaitError::TooManyParked))
        ));
        assert_eq!(hub.stats().parked, 1, "a refused wait leaves no waiter");
    }

    #[tokio::test]
    async fn invalid_ids_and_shutdown_end_the_wait() {
        let hub = Hub::new();
        let mut invalid = hub.wait_for([("", ReadFrom::Delivered)], 1, WaitLimits::default());
        assert!(matches!(
            poll_once(&mut invalid),
            Poll::Ready(Err(WaitError::InvalidId(InvalidId::Empty)))
        ));
        let mut wait = hub.wait_for(
            [("a", ReadFrom::Cursor(Cursor::new(1, 0)))],
            1,
            WaitLimits::default(),
        );
        assert!(poll_once(&mut wait).is_pending());
        hub.shutdown();
        assert!(matches!(
            poll_once(&mut wait),
            Poll::Ready(Err(WaitError::ShuttingDown))
        ));
        assert_eq!(hub.stats().parked, 0);
    }
}
