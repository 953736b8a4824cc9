//! The demo's open connections, told to finish when it stops.
//!
//! hyper-util's `GracefulShutdown` does this job with a `watch` channel whose
//! `changed()` future every connection keeps inline, about 130 bytes on each
//! connection's task for as long as it lives, so on every held poll. Here a
//! connection costs a reference count and a slot number: it hands its task's
//! waker over once, and a stop wakes every registered task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::sync::Notify;

/// The connections the demo serves; clones share them.
#[derive(Clone, Default)]
pub(crate) struct Connections {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopping: AtomicBool,
    open: AtomicUsize,
    all_closed: Notify,
    wakers: Mutex<Wakers>,
}

/// Each registered connection's task waker, in a slot it keeps.
#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<u32>,
}

/// Slot number of a connection that has not registered its waker yet.
const UNREGISTERED: u32 = u32::MAX;

pin_project! {
    /// A connection of the demo: finishes when the demo stops.
    pub(crate) struct Tracked<C> {
        #[pin]
        connection: C,
        connections: Arc<Inner>,
        slot: u32,
        finishing: bool,
    }

    impl<C> PinnedDrop for Tracked<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.slot != UNREGISTERED {
                let mut wakers = this.connections.wakers.lock().unwrap_or_else(|e| e.into_inner());
                wakers.slots[*this.slot as usize] = None;
                wakers.free.push(*this.slot);
            }
            if this.connections.open.fetch_sub(1, Ordering::AcqRel) == 1
                && this.connections.stopping.load(Ordering::Acquire)
            {
                this.connections.all_closed.notify_waiters();
            }
        }
    }
}

impl Connections {
    /// Tracks `connection` until it ends.
    pub(crate) fn track<C>(&self, connection: C) -> Tracked<C> {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Tracked {
            connection,
            connections: Arc::clone(&self.inner),
            slot: UNREGISTERED,
            finishing: false,
        }
    }

    /// Asks every connection to finish and waits until all have closed.
    pub(crate) async fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
            wakers.slots.iter_mut().filter_map(Option::take).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let closed = self.inner.all_closed.notified();
            if self.inner.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl<C: GracefulConnection> Future for Tracked<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.finishing {
            if *this.slot == UNREGISTERED {
                // Once: a spawned task's waker stays the same for its life.
                let mut wakers = this
                    .connections
                    .wakers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let waker = Some(cx.waker().clone());
                *this.slot = match wakers.free.pop() {
                    Some(slot) => {
                        wakers.slots[slot as usize] = waker;
                        slot
                    }
                    None => {
                        wakers.slots.push(waker);
                        (wakers.slots.len() - 1) as u32
                    }
                };
            }
            // Read after registering, under the lock's ordering: a stop
            // either sees the waker or is seen here.
            if this.connections.stopping.load(Ordering::Acquire) {
                *this.finishing = true;
                this.connection.as_mut().graceful_shutdown();
            }
        }
        this.connection.poll(cx)
    }
}
