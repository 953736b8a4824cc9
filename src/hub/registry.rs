//! The waiter registry: which ids have requests parked in this process, how
//! many, and the wake-up signal of each.
//!
//! A waiter holds no event and no queue slot: it is woken to read the store's
//! log again. Going away therefore consumes nothing, and a wake-up that races
//! with a departure loses nothing.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

const SHARDS: usize = 32;

pub(crate) struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    parked: AtomicUsize,
}

type Shard = HashMap<Arc<str>, Slot>;

struct Slot {
    notify: Arc<Notify>,
    waiters: usize,
}

/// Why a waiter could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The id already has its limit of parked waiters.
    PerId,
    /// The process has its limit of parked waiters.
    Global,
}

/// One parked waiter; dropping it unregisters it.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: Arc<str>,
    notify: Arc<Notify>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            parked: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(id) as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a waiter for `id`, within the per-id and global limits.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: &Arc<str>,
        per_id_limit: usize,
        global_limit: usize,
    ) -> Result<Registration, RegisterError> {
        if self.parked.fetch_add(1, Ordering::Relaxed) >= global_limit {
            self.parked.fetch_sub(1, Ordering::Relaxed);
            return Err(RegisterError::Global);
        }
        let mut shard = self.shard(id);
        let slot = match shard.get_mut(&**id) {
            Some(slot) => slot,
            None => shard.entry(Arc::clone(id)).or_insert_with(|| Slot {
                notify: Arc::new(Notify::new()),
                waiters: 0,
            }),
        };
        if slot.waiters >= per_id_limit {
            let unused = slot.waiters == 0;
            drop(shard);
            if unused {
                self.remove_if_unused(id);
            }
            self.parked.fetch_sub(1, Ordering::Relaxed);
            return Err(RegisterError::PerId);
        }
        slot.waiters += 1;
        let notify = Arc::clone(&slot.notify);
        drop(shard);
        Ok(Registration {
            registry: Arc::clone(self),
            id: Arc::clone(id),
            notify,
        })
    }

    fn remove_if_unused(&self, id: &str) {
        let mut shard = self.shard(id);
        if shard.get(id).is_some_and(|slot| slot.waiters == 0) {
            shard.remove(id);
        }
    }

    fn unregister(&self, id: &str) {
        let mut shard = self.shard(id);
        if let Some(slot) = shard.get_mut(id) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                shard.remove(id);
            }
        }
        drop(shard);
        self.parked.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes every waiter parked on `id`; false when none is.
    pub(crate) fn notify(&self, id: &str) -> bool {
        // Wake outside the shard lock: waking a large fan-out takes a while
        // and must not hold up other ids of the shard.
        let notify = self.shard(id).get(id).map(|slot| Arc::clone(&slot.notify));
        match notify {
            Some(notify) => {
                notify.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// Wakes every waiter of every id.
    pub(crate) fn notify_all(&self) {
        for shard in self.shards.iter() {
            let notifies: Vec<Arc<Notify>> = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .values()
                .map(|slot| Arc::clone(&slot.notify))
                .collect();
            for notify in notifies {
                notify.notify_waiters();
            }
        }
    }

    /// Waiters parked now.
    pub(crate) fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Ids with at least one parked waiter.
    #[cfg(test)]
    pub(crate) fn parked_ids(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum()
    }
}

impl Registration {
    /// The wake-up signal of this waiter's id.
    pub(crate) fn notify(&self) -> &Arc<Notify> {
        &self.notify
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_dropping_frees_the_slot() {
        let registry = Arc::new(Registry::new());
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let first = registry.register(&a, 2, 3).unwrap();
        let second = registry.register(&a, 2, 3).unwrap();
        assert_eq!(
            registry.register(&a, 2, 3).err(),
            Some(RegisterError::PerId)
        );
        let third = registry.register(&b, 2, 3).unwrap();
        assert_eq!(
            registry.register(&b, 2, 3).err(),
            Some(RegisterError::Global)
        );
        assert_eq!(registry.parked(), 3);
        assert_eq!(registry.parked_ids(), 2);
        drop((first, second, third));
        assert_eq!(registry.parked(), 0);
        assert_eq!(registry.parked_ids(), 0);
    }

    #[test]
    fn a_refused_waiter_leaves_no_slot_behind() {
        let registry = Arc::new(Registry::new());
        let a: Arc<str> = Arc::from("a");
        assert_eq!(
            registry.register(&a, 0, 10).err(),
            Some(RegisterError::PerId)
        );
        assert_eq!(registry.parked(), 0);
        assert_eq!(registry.parked_ids(), 0);
    }

    use std::future::Future;

    #[tokio::test]
    async fn notify_wakes_every_waiter_of_the_id_only() {
        let registry = Arc::new(Registry::new());
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let ra1 = registry.register(&a, 8, 8).unwrap();
        let ra2 = registry.register(&a, 8, 8).unwrap();
        let rb = registry.register(&b, 8, 8).unwrap();
        let wa1 = Arc::clone(ra1.notify()).notified_owned();
        let wa2 = Arc::clone(ra2.notify()).notified_owned();
        let wb = Arc::clone(rb.notify()).notified_owned();
        assert!(registry.notify("a"));
        assert!(!registry.notify("nobody"));
        wa1.await;
        wa2.await;
        let mut wb = std::pin::pin!(wb);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(wb.as_mut().poll(&mut cx).is_pending(), "b was not notified");
        registry.notify("b");
        assert!(wb.as_mut().poll(&mut cx).is_ready());
    }
}
