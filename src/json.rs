//! JSON events, and cursors in serde formats (feature `serde`).

use std::fmt;

use http::HeaderValue;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::cursor::Cursor;
use crate::event::Event;

impl Event {
    /// An event whose body is `value` as JSON, delivered with
    /// `Content-Type: application/json`.
    ///
    /// ```
    /// use tower_longpoll::Event;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Shipped {
    ///     order: u64,
    ///     carrier: &'static str,
    /// }
    ///
    /// let event = Event::json(&Shipped { order: 17, carrier: "post" })?;
    /// assert_eq!(event.data(), r#"{"order":17,"carrier":"post"}"#);
    /// assert_eq!(event.content_type_value().unwrap(), "application/json");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    /// When `value` cannot be written as JSON (a map with keys that are not
    /// strings, a `Serialize` implementation that fails).
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn json<T>(value: &T) -> Result<Event, serde_json::Error>
    where
        T: Serialize + ?Sized,
    {
        let data = serde_json::to_vec(value)?;
        Ok(Event::new(data).content_type(HeaderValue::from_static("application/json")))
    }
}

/// A cursor is written as its text form, `<epoch>-<sequence>`, as clients
/// see it in `ETag`: a client's saved state can hold it as a string.
///
/// ```
/// use tower_longpoll::Cursor;
///
/// let cursor = Cursor::new(0x8f3a_09c1_d2e4_b750, 42);
/// assert_eq!(serde_json::to_string(&cursor)?, r#""8f3a09c1d2e4b750-42""#);
/// let back: Cursor = serde_json::from_str(r#""8f3a09c1d2e4b750-42""#)?;
/// assert_eq!(back, cursor);
/// assert!(serde_json::from_str::<Cursor>(r#""42""#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Reads a cursor's text form; anything else is an error that says what is
/// wrong with it.
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CursorText;

        impl Visitor<'_> for CursorText {
            type Value = Cursor;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cursor, <16 hex digits>-<decimal sequence>")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Cursor, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CursorText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_as_strings_and_bad_ones_say_why() {
        let cursor = Cursor::new(u64::MAX, u64::MAX);
        let text = serde_json::to_string(&cursor).unwrap();
        assert_eq!(text, r#""ffffffffffffffff-18446744073709551615""#);
        assert_eq!(serde_json::from_str::<Cursor>(&text).unwrap(), cursor);
        // An owned string (from an escaped JSON string) reads as well.
        let escaped = r#""0000000000000001\u002d2""#;
        assert_eq!(
            serde_json::from_str::<Cursor>(escaped).unwrap(),
            Cursor::new(1, 2)
        );
        let err = serde_json::from_str::<Cursor>(r#""00ff-1""#).unwrap_err();
        assert!(
            err.to_string().contains("the epoch must be 16 hex digits"),
            "{err}"
        );
        let err = serde_json::from_str::<Cursor>("42").unwrap_err();
        assert!(err.to_string().contains("a cursor"), "{err}");
    }

    #[test]
    fn json_events_carry_their_type() {
        let event = Event::json(&serde_json::json!({"n": 1})).unwrap();
        assert_eq!(event.data(), r#"{"n":1}"#);
        assert_eq!(event.content_type_value().unwrap(), "application/json");
        let mut keys = std::collections::HashMap::new();
        keys.insert((1, 2), "not a string key");
        assert!(Event::json(&keys).is_err());
    }
}
