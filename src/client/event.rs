//! What the client yields: one event as the server sent it.

use bytes::Bytes;
use http::HeaderValue;

/// One event received by a [`LongPollClient`](super::LongPollClient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    pub(crate) data: Bytes,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) cursor: String,
    pub(crate) gap: bool,
}

impl ReceivedEvent {
    /// The event's bytes, exactly as published.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The event's bytes, taken out of the event.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// The event's bytes read as JSON into a `T` (feature `serde`), whatever
    /// its `Content-Type` says.
    ///
    /// ```
    /// # use tower_longpoll::client::ReceivedEvent;
    /// #[derive(serde::Deserialize)]
    /// struct Shipped {
    ///     order: u64,
    /// }
    ///
    /// fn order_of(event: &ReceivedEvent) -> Result<u64, serde_json::Error> {
    ///     Ok(event.json::<Shipped>()?.order)
    /// }
    /// ```
    ///
    /// # Errors
    /// When the bytes are not JSON, or not a `T`.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn json<T>(&self) -> Result<T, serde_json::Error>
    where
        T: serde::de::DeserializeOwned,
    {
        serde_json::from_slice(&self.data)
    }

    /// The event's `Content-Type`, if the server sent one.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    /// The event's cursor, from the response's `ETag` (without quotes): the
    /// position to resume after it, with [`Builder::since`](super::Builder::since).
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// Whether the server marked the response `Longpoll-Gap: true`: events
    /// between the cursor the client sent and this one are no longer kept
    /// (or the cursor came from before a server restart), so the caller may
    /// have missed some and should reload its state.
    pub fn gap(&self) -> bool {
        self.gap
    }
}
