//! Idempotency keys of publishes, for a store that keeps them in memory: a
//! retried publish within the window gets the first one's cursor back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cursor::Cursor;

/// An id and an idempotency key.
type Key = (Box<str>, Box<str>);

/// The cursors that publishes with an idempotency key got, per id and key,
/// for `window`.
#[derive(Debug)]
pub(crate) struct Recent {
    window: Duration,
    entries: Mutex<HashMap<Key, (Cursor, Instant)>>,
}

impl Recent {
    pub(crate) fn new(window: Duration) -> Recent {
        Recent {
            window,
            entries: Mutex::default(),
        }
    }

    /// Runs `append` unless a publish to `id` with `key` got a cursor within
    /// the window, whose cursor is then returned with `false`. The check and
    /// the append happen under one lock, so two concurrent publishes with
    /// one key append once.
    pub(crate) fn once<E>(
        &self,
        id: &str,
        key: &str,
        append: impl FnOnce() -> Result<Cursor, E>,
    ) -> Result<(Cursor, bool), E> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = (Box::from(id), Box::from(key));
        if let Some((cursor, at)) = entries.get(&entry) {
            if now.duration_since(*at) < self.window {
                return Ok((*cursor, false));
            }
        }
        let cursor = append()?;
        if entries.len() >= 1024 && entries.len().is_power_of_two() {
            entries.retain(|_, (_, at)| now.duration_since(*at) < self.window);
        }
        entries.insert(entry, (cursor, now));
        Ok((cursor, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_appends_once_within_the_window_and_again_after_it() {
        let recent = Recent::new(Duration::from_secs(60));
        let mut appended = 0;
        let mut append = || -> Result<Cursor, ()> {
            appended += 1;
            Ok(Cursor::new(7, appended))
        };
        assert_eq!(
            recent.once("a", "k", &mut append),
            Ok((Cursor::new(7, 1), true))
        );
        assert_eq!(
            recent.once("a", "k", &mut append),
            Ok((Cursor::new(7, 1), false))
        );
        // Keys are per id.
        assert_eq!(
            recent.once("b", "k", &mut append),
            Ok((Cursor::new(7, 2), true))
        );
        // A failed append remembers nothing.
        assert_eq!(recent.once("c", "k", || Err::<Cursor, ()>(())), Err(()));
        assert_eq!(
            recent.once("c", "k", &mut append),
            Ok((Cursor::new(7, 3), true))
        );
        // Past the window (here: no window at all) a key appends again.
        let forgetful = Recent::new(Duration::ZERO);
        for seq in [4, 5] {
            assert_eq!(
                forgetful.once("a", "k", &mut append),
                Ok((Cursor::new(7, seq), true))
            );
        }
    }
}
