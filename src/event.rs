//! Events: what a publisher sends and a parked poll receives.

use bytes::Bytes;
use http::HeaderValue;

use crate::cursor::Cursor;

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
