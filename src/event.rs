//! Events: what a publisher sends and a parked poll receives.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cursor::Cursor;

/// One message for a client id.
///
/// The body is delivered byte for byte as the body of the poll's response, with
/// the event's content type (`application/octet-stream` when none was given).
///
/// An event may also carry a whole response: its own [status](Event::status)
/// and [headers](Event::headers), as a GRIP publisher sends an
/// `http-response`. A poll answered with one event gets them; the layer's own
/// headers (`Content-Type`, `ETag`, `Cache-Control`, `Longpoll-Gap`) and the
/// message framing (`Content-Length`, `Transfer-Encoding`, `Connection` and
/// the other hop-by-hop headers) are always the layer's. A batch
/// (`multipart/mixed`) is always `200` and its parts carry only their content
/// type and cursor.
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
    status: Option<StatusCode>,
    // Boxed: most events have none, and a `HeaderMap` is large.
    headers: Option<Box<HeaderMap>>,
}

impl Event {
    /// An event carrying `data` as its body.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Event {
            data: data.into(),
            content_type: None,
            invalid_content_type: false,
            status: None,
            headers: None,
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

    /// Sets the status of the response that delivers this event alone
    /// (default `200 OK`).
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_longpoll::Event;
    ///
    /// let gone = Event::new("the order was cancelled").status(StatusCode::GONE);
    /// assert_eq!(gone.status_value(), Some(StatusCode::GONE));
    /// ```
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets headers sent with the response that delivers this event alone,
    /// replacing any set before. Headers the layer sets itself, and hop-by-hop
    /// and framing headers, are not sent (see the type's docs); a
    /// `Content-Type` here is ignored in favour of
    /// [`content_type`](Event::content_type).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = (!headers.is_empty()).then(|| Box::new(headers));
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

    /// The status set with [`status`](Event::status).
    pub fn status_value(&self) -> Option<StatusCode> {
        self.status
    }

    /// The headers set with [`headers`](Event::headers).
    pub fn headers_value(&self) -> Option<&HeaderMap> {
        self.headers.as_deref()
    }

    pub(crate) fn has_invalid_content_type(&self) -> bool {
        self.invalid_content_type
    }

    /// This event with its bytes in allocations of their own, for a store
    /// that keeps it in memory.
    ///
    /// A body read from a request (axum's `to_bytes`, hyper's `Incoming`) is
    /// usually a slice of the connection's read buffer, and a header value a
    /// slice of the request head: kept in a log for minutes, a 30-byte event
    /// would hold on to the whole buffer (8 KiB or more). Every body is
    /// copied: even a large one may be a slice of a larger buffer, and a copy
    /// costs far less than the memory it can free.
    pub(crate) fn compacted(mut self) -> Self {
        self.data = Bytes::copy_from_slice(&self.data);
        self.content_type = self.content_type.map(|value| own_value(&value));
        if let Some(headers) = self.headers.take() {
            let mut own = HeaderMap::with_capacity(headers.len());
            for (name, value) in headers.iter() {
                own.append(name.clone(), own_value(value));
            }
            self.headers = Some(Box::new(own));
        }
        self
    }

    /// The bytes this event holds besides its own struct, for the store's
    /// limits: its body, its content type, and its headers with their map.
    pub(crate) fn kept_size(&self) -> usize {
        // A header's entry in the map, besides its name's and value's bytes.
        const HEADER_ENTRY: usize = size_of::<HeaderName>() + size_of::<HeaderValue>() + 16;
        let headers = self.headers.as_deref().map_or(0, |headers| {
            size_of::<HeaderMap>()
                + headers
                    .iter()
                    .map(|(name, value)| HEADER_ENTRY + name.as_str().len() + value.len())
                    .sum::<usize>()
        });
        self.data.len() + self.content_type.as_ref().map_or(0, HeaderValue::len) + headers
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

/// A copy of a header value in an allocation of its own.
fn own_value(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes())
        .expect("a header value's bytes make a header value");
    copy.set_sensitive(value.is_sensitive());
    copy
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

        let mut headers = HeaderMap::new();
        headers.insert(
            "x-kept",
            HeaderValue::from_maybe_shared(buffer.slice(20..24)).unwrap(),
        );
        let kept = Event::new(body)
            .status(StatusCode::CREATED)
            .headers(headers)
            .compacted();
        assert_eq!(kept.status_value(), Some(StatusCode::CREATED));
        assert_eq!(kept.headers_value().unwrap()["x-kept"], "xxxx");
    }
}
