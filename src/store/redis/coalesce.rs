//! One read per node for the waiters of an id woken together.
//!
//! A publish to an id with N polls parked on a node wakes N waiters, each of
//! which reads the log from the same cursor. Reads of one id from one
//! position, for the same number of events, that are in flight together are
//! sent to Redis once and their result shared, so that the publish costs the
//! node one read script, not N.
//!
//! A waiter woken by an event must not be served by a read that started
//! before the event was appended: that read may not see it, and the
//! wake-up would be lost. So every in-flight read is closed to newcomers
//! when its id is woken (a wake-up message, or an append by this node) and
//! when every waiter is woken; the woken waiters start a read of their own,
//! which the others woken with them share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::{ReadFrom, ReadResult, StoreError};

type Shared = Option<Result<ReadResult, String>>;

struct InFlight {
    from: ReadFrom,
    max_events: usize,
    joinable: bool,
    result: watch::Receiver<Shared>,
}

/// The reads in flight, per id.
#[derive(Default)]
pub(super) struct Coalescer {
    reads: Mutex<HashMap<Arc<str>, Vec<InFlight>>>,
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
    pub(super) fn begin(self: &Arc<Self>, id: &str, from: ReadFrom, max_events: usize) -> Role {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flights) = reads.get(id) {
            if let Some(flight) = flights.iter().find(|flight| {
                flight.joinable && flight.from == from && flight.max_events == max_events
            }) {
                return Role::Join(flight.result.clone());
            }
        }
        let (tx, rx) = watch::channel(None);
        let id: Arc<str> = Arc::from(id);
        reads.entry(Arc::clone(&id)).or_default().push(InFlight {
            from,
            max_events,
            joinable: true,
            result: rx,
        });
        Role::Lead(Lead {
            coalescer: Arc::clone(self),
            id,
            result: Some(tx),
        })
    }

    /// `id` was woken: its reads in flight may predate the event.
    pub(super) fn woken(&self, id: &str) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flights) = reads.get_mut(id) {
            for flight in flights {
                flight.joinable = false;
            }
        }
    }

    /// Every waiter was woken.
    pub(super) fn all_woken(&self) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        for flight in reads.values_mut().flatten() {
            flight.joinable = false;
        }
    }
}

impl Lead {
    /// Gives the result to the reads that joined.
    pub(super) fn finish(mut self, result: &Result<ReadResult, StoreError>) {
        if let Some(tx) = self.result.take() {
            self.forget(&tx);
            let shared = match result {
                Ok(read) => Ok(read.clone()),
                Err(err) => Err(err.to_string()),
            };
            let _ = tx.send(Some(shared));
        }
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
