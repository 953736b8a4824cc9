//! Events: what a publisher sends and a parked poll receives.

use bytes::Bytes;
use http::HeaderValue;

use crate::cursor::Cursor;

/// Event bodies up to this size are copied when kept in memory
/// ([`Event::compacted`]).
pub(crate) const COMPACT_LIMIT: usize = 16 * 1024;

/// One message for a client id.
///
/// The body is delivered byte for byte as the body of the poll's response, with
/// the event's content type (`application/octet-stream` when none was given).
///
/// ```
/// use tower_longpoll::Event;
///
/// let event = Event::new(r#"{"order": 17, "state": "shipped"}"#)
///     .content_type("application/json");
/// assert_eq!(event.data().len(), 33);
/// ```
#[derive(Clone, Debug)]
pub struct Event {
    data: Bytes,
    content_type: Option<HeaderValue>,
    invalid_content_type: bool,
}

impl Event {
    /// An event carrying `data` as its body.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Event {
            data: data.into(),
            content_type: None,
            invalid_content_type: false,
        }
    }

    /// Sets the `Content-Type` the event is delivered with.
    ///
    /// A value that is not a valid header value makes [`Hub::publish`]
    /// fail with [`PublishError::InvalidContentType`].
    ///
    /// [`Hub::publish`]: crate::Hub::publish
    /// [`PublishError::InvalidContentType`]: crate::PublishError::InvalidContentType
    pub fn content_type<V>(mut self, value: V) -> Self
    where
        V: TryInto<HeaderValue>,
    {
        match value.try_into() {
            Ok(value) => {
                self.content_type = Some(value);
                self.invalid_content_type = false;
            }
            Err(_) => {
                self.content_type = None;
                self.invalid_content_type = true;
            }
        }
        self
    }

    /// The body of the event.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The content type, when one was set.
    pub fn content_type_value(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    pub(crate) fn has_invalid_content_type(&self) -> bool {
        self.invalid_content_type
    }

    /// The event with its body and content type in allocations of their
    /// own, for a store that keeps it in memory.
    ///
    /// A body read from a request (axum's `to_bytes`, hyper's `Incoming`) is
    /// usually a slice of the connection's read buffer, and a header value a
    /// slice of the request head: kept in a log for minutes, a 30-byte event
    /// would hold on to the whole buffer (8 KiB or more). Bodies up to
    /// [`COMPACT_LIMIT`] are copied; a larger body is mostly its own buffer.
    pub(crate) fn compacted(self) -> Self {
        let data = if self.data.len() <= COMPACT_LIMIT {
            Bytes::copy_from_slice(&self.data)
        } else {
            self.data
        };
        let content_type = self.content_type.map(|value| {
            let mut copy = HeaderValue::from_bytes(value.as_bytes())
                .expect("a header value's bytes make a header value");
            copy.set_sensitive(value.is_sensitive());
            copy
        });
        Event {
            data,
            content_type,
            invalid_content_type: self.invalid_content_type,
        }
    }

    /// The number of bytes this event occupies in a log, for the store's limits.
    pub(crate) fn kept_size(&self) -> usize {
        self.data.len() + self.content_type.as_ref().map_or(0, HeaderValue::len)
    }
}

/// An event as kept in a log: the event and the cursor it was given.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// The event's position in the log of its id.
    pub cursor: Cursor,
    /// The event itself.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_copies_small_bodies_and_header_values_out_of_their_buffers() {
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let body = buffer.slice(100..130);
        let mut content_type = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        content_type.set_sensitive(true);
        let event = Event::new(body.clone()).content_type(content_type.clone());
        let kept = event.compacted();
        assert_eq!(kept.data(), &body);
        assert_ne!(kept.data().as_ptr(), body.as_ptr(), "the body was copied");
        let kept_type = kept.content_type_value().unwrap();
        assert_eq!(kept_type, &content_type);
        assert!(kept_type.is_sensitive());

        let large = Bytes::from(vec![b'y'; COMPACT_LIMIT + 1]);
        let kept = Event::new(large.clone()).compacted();
        assert_eq!(
            kept.data().as_ptr(),
            large.as_ptr(),
            "a large body is kept as it is"
        );
    }
}
