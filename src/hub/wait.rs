//! Waiting for the next events of an id: read, register, read again, park.
//!
//! The order is what makes the wait race-free. A waiter registers and takes
//! its wake-up signal *before* its second read of the log, and a publisher
//! appends *before* it signals; so an event appended at any moment is either
//! seen by that read or signalled to the waiter afterwards. A waiter holds no
//! event while it waits, so dropping it (the client went away) consumes
//! nothing.
//!
//! A poll without a cursor takes the id's delivery position at its first
//! read and waits for what comes after *that* position, as if it had sent it
//! as its cursor: another tab of the same id taking an event first must not
//! make this one miss it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;

use super::Hub;
use super::registry::{RegisterError, Registration};
use crate::cursor::Cursor;
use crate::id::InvalidId;
use crate::store::{PendingStore, ReadFrom, ReadResult, StoreError, StoreFuture};

/// How many waiters may park, for [`Hub::wait_for`].
///
/// Every id of a wait takes one place: a wait on three ids counts as three
/// parked waiters in [`Stats::parked`](crate::Stats::parked) and against
/// both limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitLimits {
    per_id: usize,
    global: usize,
}

impl WaitLimits {
    /// At most `per_id` waiters parked on one id and `global` over all ids
    /// of the hub (polls parked by a [`LongPollLayer`](crate::LongPollLayer)
    /// on the same hub count too).
    pub const fn new(per_id: usize, global: usize) -> Self {
        WaitLimits { per_id, global }
    }

    pub(crate) fn per_id(&self) -> usize {
        self.per_id
    }

    pub(crate) fn global(&self) -> usize {
        self.global
    }
}

/// 8 waiters per id, 100,000 in all: the defaults of the layer
/// ([`LongPollLayerBuilder`](crate::LongPollLayerBuilder)) as well.
impl Default for WaitLimits {
    fn default() -> Self {
        WaitLimits::new(8, 100_000)
    }
}

/// Why a [`Hub::wait_for`] ended without events.
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitError {
    /// One of the ids is not acceptable.
    InvalidId(InvalidId),
    /// One of the ids already has [`WaitLimits`]'s `per_id` waiters parked.
    TooManyForId,
    /// The hub already has [`WaitLimits`]'s `global` waiters parked.
    TooManyParked,
    /// The store keeps as many ids as it may and could not take a new one.
    TooManyIds,
    /// The store failed before the wait could park.
    Store(StoreError),
    /// The hub is shutting down ([`Hub::shutdown`]).
    ShuttingDown,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::InvalidId(err) => err.fmt(f),
            WaitError::TooManyForId => f.write_str("an id has as many waiters as it may"),
            WaitError::TooManyParked => f.write_str("the hub has as many waiters as it may"),
            WaitError::TooManyIds => f.write_str("the store keeps as many ids as it may"),
            WaitError::Store(err) => err.fmt(f),
            WaitError::ShuttingDown => f.write_str("the hub is shutting down"),
        }
    }
}

impl std::error::Error for WaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::InvalidId(err) => Some(err),
            WaitError::Store(err) => Some(err),
            _ => None,
        }
    }
}

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum WaitOutcome {
    /// Events after the waiter's position.
    Events(ReadResult),
    /// Nothing after the position, for a wait that was not to park.
    Empty,
    /// A limit kept the waiter from parking, or the store failed before it
    /// could park.
    Failed(WaitError),
}

// A stage keeps only a store call that has to wait, boxed: a ready value is
// taken at once. Inline, a read's value would size every parked poll.
enum Stage {
    Start,
    FirstRead(PendingStore<Result<ReadResult, StoreError>>),
    Register,
    Watch(PendingStore<Result<(), StoreError>>),
    /// Registered, or woken: the log is read (again).
    ReadAgain,
    Read(PendingStore<Result<ReadResult, StoreError>>),
    Parked,
    Done,
}

/// A store call of a stage, answered.
enum Answered {
    FirstRead(Result<ReadResult, StoreError>),
    Watch(Result<(), StoreError>),
    Read(Result<ReadResult, StoreError>),
}

/// The store call's value when it is known at once; otherwise the stage
/// that waits for it.
fn answered<T>(
    call: StoreFuture<T>,
    answer: fn(T) -> Answered,
    waiting: fn(PendingStore<T>) -> Stage,
    stage: &mut Stage,
) -> Option<Answered> {
    match call.into_value_or_pending() {
        Ok(value) => Some(answer(value)),
        Err(pending) => {
            *stage = waiting(pending);
            None
        }
    }
}

pin_project! {
    /// Resolves when the log of an id has events after a position.
    pub(crate) struct Wait {
        hub: Hub,
        id: Arc<str>,
        from: ReadFrom,
        max_events: usize,
        limits: WaitLimits,
        park: bool,
        stage: Stage,
        registration: Option<Registration>,
        watching: bool,
        #[pin]
        notified: Option<OwnedNotified>,
        position: Option<Cursor>,
    }

    impl PinnedDrop for Wait {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.watching {
                this.hub.inner.store.unwatch(this.id);
            }
        }
    }
}

impl Wait {
    /// A wait that reads the log when first polled; unless `park`, it ends
    /// with [`WaitOutcome::Empty`] when that read finds nothing.
    pub(crate) fn new(
        hub: Hub,
        id: Arc<str>,
        from: ReadFrom,
        max_events: usize,
        limits: WaitLimits,
        park: bool,
    ) -> Self {
        let mut wait = Self::at(hub, id, from, max_events, limits, Stage::Start, None);
        wait.park = park;
        wait
    }

    /// A wait whose first read, done by the caller, found nothing after `position`.
    /// From then on it waits for what comes after `position`, whether the
    /// client sent it as its cursor or it is the id's delivery position.
    pub(crate) fn after_empty_read(
        hub: Hub,
        id: Arc<str>,
        max_events: usize,
        limits: WaitLimits,
        position: Cursor,
    ) -> Self {
        let from = ReadFrom::Cursor(position);
        Self::at(
            hub,
            id,
            from,
            max_events,
            limits,
            Stage::Register,
            Some(position),
        )
    }

    /// A wait whose first read, started by the caller, has to wait for the
    /// store; unless `park`, it ends with [`WaitOutcome::Empty`] when that
    /// read finds nothing.
    pub(crate) fn after_pending_read(
        hub: Hub,
        id: Arc<str>,
        from: ReadFrom,
        max_events: usize,
        limits: WaitLimits,
        park: bool,
        read: PendingStore<Result<ReadResult, StoreError>>,
    ) -> Self {
        let stage = Stage::FirstRead(read);
        let mut wait = Self::at(hub, id, from, max_events, limits, stage, None);
        wait.park = park;
        wait
    }

    fn at(
        hub: Hub,
        id: Arc<str>,
        from: ReadFrom,
        max_events: usize,
        limits: WaitLimits,
        stage: Stage,
        position: Option<Cursor>,
    ) -> Self {
        Wait {
            hub,
            id,
            from,
            max_events,
            limits,
            park: true,
            stage,
            registration: None,
            watching: false,
            notified: None,
            position,
        }
    }

    /// The client's position as last read: what it has now.
    pub(crate) fn position(&self) -> Option<Cursor> {
        self.position
    }
}

impl Future for Wait {
    type Output = WaitOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
        let mut this = self.project();
        let store = &this.hub.inner.store;
        loop {
            let answer = match this.stage {
                Stage::Start => answered(
                    store.read(this.id, *this.from, *this.max_events),
                    Answered::FirstRead,
                    Stage::FirstRead,
                    this.stage,
                ),
                Stage::FirstRead(read) => Some(Answered::FirstRead(ready!(read.as_mut().poll(cx)))),
                Stage::Register => {
                    let registry = &this.hub.inner.registry;
                    let registration =
                        match registry.register(this.id, this.limits.per_id, this.limits.global) {
                            Ok(registration) => registration,
                            Err(err) => {
                                *this.stage = Stage::Done;
                                return Poll::Ready(WaitOutcome::Failed(match err {
                                    RegisterError::PerId => WaitError::TooManyForId,
                                    RegisterError::Global => WaitError::TooManyParked,
                                }));
                            }
                        };
                    // The signal is taken before the next read: see the module docs.
                    this.notified
                        .set(Some(Arc::clone(registration.notify()).notified_owned()));
                    *this.registration = Some(registration);
                    *this.watching = true;
                    answered(
                        store.watch(this.id),
                        Answered::Watch,
                        Stage::Watch,
                        this.stage,
                    )
                }
                Stage::Watch(watch) => Some(Answered::Watch(ready!(watch.as_mut().poll(cx)))),
                Stage::Read(read) => Some(Answered::Read(ready!(read.as_mut().poll(cx)))),
                Stage::ReadAgain => answered(
                    store.read(this.id, *this.from, *this.max_events),
                    Answered::Read,
                    Stage::Read,
                    this.stage,
                ),
                Stage::Parked => {
                    let mut notified = this
                        .notified
                        .as_mut()
                        .as_pin_mut()
                        .expect("a parked waiter has a signal");
                    ready!(notified.as_mut().poll(cx));
                    let registration = this
                        .registration
                        .as_ref()
                        .expect("a parked waiter is registered");
                    this.notified
                        .set(Some(Arc::clone(registration.notify()).notified_owned()));
                    *this.stage = Stage::ReadAgain;
                    None
                }
                Stage::Done => return Poll::Pending,
            };
            match answer {
                // A new stage: it waits for its store call, or starts one.
                None => {}
                Some(Answered::FirstRead(Ok(result))) => {
                    *this.position = Some(result.position());
                    if !result.is_empty() {
                        *this.stage = Stage::Done;
                        return Poll::Ready(WaitOutcome::Events(result));
                    }
                    *this.from = ReadFrom::Cursor(result.position());
                    if !*this.park {
                        *this.stage = Stage::Done;
                        return Poll::Ready(WaitOutcome::Empty);
                    }
                    *this.stage = Stage::Register;
                }
                Some(Answered::FirstRead(Err(StoreError::TooManyIds { .. }))) => {
                    *this.stage = Stage::Done;
                    return Poll::Ready(WaitOutcome::Failed(WaitError::TooManyIds));
                }
                Some(Answered::FirstRead(Err(err))) => {
                    *this.stage = Stage::Done;
                    return Poll::Ready(WaitOutcome::Failed(WaitError::Store(err)));
                }
                Some(Answered::Watch(watched)) => {
                    if let Err(err) = watched {
                        tracing::warn!(client_id = &**this.id, error = %err,
                            "store cannot report events from other nodes; the poll may wait for its timeout");
                    }
                    *this.stage = Stage::ReadAgain;
                }
                Some(Answered::Read(Ok(result))) => {
                    *this.position = Some(result.position());
                    if !result.is_empty() {
                        *this.stage = Stage::Done;
                        // Leave the registry now rather than when the
                        // response future is dropped.
                        *this.registration = None;
                        if std::mem::take(this.watching) {
                            store.unwatch(this.id);
                        }
                        return Poll::Ready(WaitOutcome::Events(result));
                    }
                    *this.stage = Stage::Parked;
                }
                Some(Answered::Read(Err(err))) => {
                    tracing::warn!(client_id = &**this.id, error = %err,
                        "reading the event log failed; the poll keeps waiting");
                    *this.stage = Stage::Parked;
                }
            }
        }
    }
}
