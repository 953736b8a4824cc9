//! One read per node for the waiters of an id woken together.
//!
//! A publish to an id with N polls parked on a node wakes N waiters, each of
//! which reads the log from the same cursor. Reads of one id from one
//! position, for the same number of events, are sent to Redis once and
//! their result shared, so that the publish costs the node one read script,
//! not N: a read joins one in flight, or takes the result of one that
//! finished since the id's last wake-up (10,000 woken waiters take well over
//! a read's round trip to get going, so sharing only reads in flight still
//! sent about a hundred).
//!
//! A waiter woken by an event must not be served by a read that started
//! before the event was appended: that read may not see it, and the
//! wake-up would be lost. So every read, in flight or finished, is closed to
//! newcomers when its id is woken (a wake-up message, or an append by this
//! node), when every waiter is woken, and when the node stops listening for
//! the id's wake-ups; the woken waiters start a read of their own, which the
//! others woken with them share. A finished read is kept for others only if
//! the node was subscribed to the id's wake-ups when it started (an event
//! appended after it would then have closed it), and for at most
//! [`KEEP_FINISHED`]. A commit moves the delivery position: it closes the
//! reads from the delivery position only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cursor::Cursor;
use crate::store::{ReadFrom, ReadResult, StoreError};

type Shared = Option<Result<ReadResult, String>>;

/// How long a finished read may serve others: long enough for every waiter
/// woken by one wake-up, short enough to keep little.
pub(super) const KEEP_FINISHED: Duration = Duration::from_secs(1);

/// Above this many ids with reads, finished reads are dropped as soon as
/// they are stale rather than when their id is next read.
const PRUNE_ABOVE: usize = 1024;

struct InFlight {
    from: ReadFrom,
    max_events: usize,
    joinable: bool,
    /// Whether the node was subscribed to the id's wake-ups when it started.
    live: bool,
    finished: Option<Instant>,
    result: watch::Receiver<Shared>,
}

impl InFlight {
    /// Whether a newcomer may still take this read's result (if it asks for
    /// the same position and size).
    fn open(&self, now: Instant) -> bool {
        self.joinable
            && self
                .finished
                .is_none_or(|at| self.live && now.duration_since(at) < KEEP_FINISHED)
    }

    fn serves(&self, from: ReadFrom, max_events: usize, now: Instant) -> bool {
        self.open(now) && self.from == from && self.max_events == max_events
    }
}

/// Closes every read of an id to newcomers; finished ones go.
fn close(flights: &mut Vec<InFlight>) {
    flights.retain_mut(|flight| {
        flight.joinable = false;
        flight.finished.is_none()
    });
}

/// The reads in flight, per id.
#[derive(Default)]
pub(super) struct Coalescer {
    reads: Mutex<HashMap<Arc<str>, Vec<InFlight>>>,
    /// The newest cursor this node committed per id, and when.
    commits: Mutex<HashMap<Arc<str>, (Cursor, Instant)>>,
}

/// What a read should do: send the script (and share its result), or wait
/// for one in flight.
pub(super) enum Role {
    Lead(Lead),
    Join(watch::Receiver<Shared>),
}

/// The read that goes to Redis; its result is given to the reads that
/// joined it. Dropped without a result, the joiners read on their own.
pub(super) struct Lead {
    coalescer: Arc<Coalescer>,
    id: Arc<str>,
    result: Option<watch::Sender<Shared>>,
}

impl Coalescer {
    /// `live`: the node is subscribed to the id's wake-ups now.
    pub(super) fn begin(
        self: &Arc<Self>,
        id: &str,
        from: ReadFrom,
        max_events: usize,
        live: bool,
    ) -> Role {
        let now = Instant::now();
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flights) = reads.get_mut(id) {
            if let Some(flight) = flights
                .iter()
                .find(|flight| flight.serves(from, max_events, now))
            {
                return Role::Join(flight.result.clone());
            }
            flights.retain(|flight| flight.finished.is_none() || flight.open(now));
        }
        let (tx, rx) = watch::channel(None);
        let id: Arc<str> = Arc::from(id);
        reads.entry(Arc::clone(&id)).or_default().push(InFlight {
            from,
            max_events,
            joinable: true,
            live,
            finished: None,
            result: rx,
        });
        Role::Lead(Lead {
            coalescer: Arc::clone(self),
            id,
            result: Some(tx),
        })
    }

    /// `id` was woken, or the node stopped listening for its wake-ups: its
    /// reads may predate an event.
    pub(super) fn woken(&self, id: &str) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flights) = reads.get_mut(id) {
            close(flights);
            if flights.is_empty() {
                reads.remove(id);
            }
        }
    }

    /// Whether a commit of `cursor` for `id` needs sending: not when this
    /// node sent one at least as far within [`KEEP_FINISHED`]. The N polls
    /// of an id woken by one event all commit its cursor; the position only
    /// moves forward, so one commit does for all of them (Redis runs it
    /// before any later read this node sends on the same connection).
    pub(super) fn commit_needed(&self, id: &str, cursor: Cursor) -> bool {
        let now = Instant::now();
        let mut commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((sent, at)) = commits.get_mut(id) {
            let fresh = now.duration_since(*at) < KEEP_FINISHED;
            if fresh && sent.epoch() == cursor.epoch() && sent.seq() >= cursor.seq() {
                return false;
            }
            (*sent, *at) = (cursor, now);
            return true;
        }
        if commits.len() > PRUNE_ABOVE {
            commits.retain(|_, (_, at)| now.duration_since(*at) < KEEP_FINISHED);
        }
        commits.insert(Arc::from(id), (cursor, now));
        true
    }

    /// The id's delivery position moved: reads from it may predate that.
    pub(super) fn delivered_moved(&self, id: &str) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flights) = reads.get_mut(id) {
            for flight in flights.iter_mut() {
                if flight.from == ReadFrom::Delivered {
                    flight.joinable = false;
                }
            }
        }
    }

    /// Every waiter was woken.
    pub(super) fn all_woken(&self) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        reads.retain(|_, flights| {
            close(flights);
            !flights.is_empty()
        });
    }
}

impl Lead {
    /// Gives the result to the reads that joined, and keeps it for the
    /// reads that come before the id's next wake-up.
    pub(super) fn finish(mut self, result: &Result<ReadResult, StoreError>) {
        if let Some(tx) = self.result.take() {
            let keep = result.is_ok() && self.mark_finished(&tx);
            if !keep {
                self.forget(&tx);
            }
            let shared = match result {
                Ok(read) => Ok(read.clone()),
                Err(err) => Err(err.to_string()),
            };
            let _ = tx.send(Some(shared));
        }
    }

    /// Marks this read finished if it may serve others; whether it may.
    fn mark_finished(&self, tx: &watch::Sender<Shared>) -> bool {
        let now = Instant::now();
        let mut reads = self
            .coalescer
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut kept = false;
        if let Some(flights) = reads.get_mut(&*self.id) {
            if let Some(flight) = flights
                .iter_mut()
                .find(|flight| flight.result.same_channel(&tx.subscribe()))
            {
                if flight.live && flight.joinable {
                    flight.finished = Some(now);
                    kept = true;
                }
            }
        }
        if reads.len() > PRUNE_ABOVE {
            reads.retain(|_, flights| {
                flights.retain(|flight| {
                    flight
                        .finished
                        .is_none_or(|at| now.duration_since(at) < KEEP_FINISHED)
                });
                !flights.is_empty()
            });
        }
        kept
    }

    fn forget(&self, tx: &watch::Sender<Shared>) {
        let mut reads = self
            .coalescer
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(flights) = reads.get_mut(&*self.id) {
            flights.retain(|flight| !flight.result.same_channel(&tx.subscribe()));
            if flights.is_empty() {
                reads.remove(&*self.id);
            }
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some(tx) = self.result.take() {
            self.forget(&tx);
        }
    }
}

/// Waits for the lead's result; `None` when the lead was dropped first.
pub(super) async fn joined(
    mut result: watch::Receiver<Shared>,
) -> Option<Result<ReadResult, StoreError>> {
    let shared = result.wait_for(Option::is_some).await.ok()?.clone()?;
    Some(shared.map_err(|message| StoreError::Backend(message.into())))
}
