//! Errors: what a publish can fail with, and why a poll is refused.

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

use crate::id::InvalidId;
use crate::store::StoreError;

/// Why [`Hub::publish`](crate::Hub::publish) failed. Nothing was kept.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The client id is not acceptable.
    InvalidId(InvalidId),
    /// The event's body is larger than the hub accepts.
    TooLarge {
        /// The body's size in bytes.
        size: usize,
        /// The hub's limit in bytes.
        limit: usize,
    },
    /// The content type given to [`Event::content_type`](crate::Event::content_type)
    /// is not a valid header value.
    InvalidContentType,
    /// The status given to [`Event::status`](crate::Event::status) cannot
    /// answer a poll: it is not a final status from 200 to 599, or it is
    /// `204`/`304` while the event has a body.
    InvalidStatus(http::StatusCode),
    /// The store refused or failed to keep the event.
    Store(StoreError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidId(err) => err.fmt(f),
            PublishError::TooLarge { size, limit } => write!(
                f,
                "the event is {size} bytes, more than the limit of {limit} bytes"
            ),
            PublishError::InvalidContentType => {
                f.write_str("the event's content type is not a valid header value")
            }
            PublishError::InvalidStatus(status) => write!(
                f,
                "the event's status {} cannot answer a poll (200 to 599, and no 204 or 304 with a body)",
                status.as_u16()
            ),
            PublishError::Store(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::InvalidId(err) => Some(err),
            PublishError::Store(err) => Some(err),
            _ => None,
        }
    }
}

/// A poll refused by the hook given to
/// [`LongPollLayerBuilder::authorize`](crate::LongPollLayerBuilder::authorize):
/// answered `403 Forbidden`, before anything of the id is read.
///
/// ```
/// use tower_longpoll::Forbidden;
///
/// let refused = Forbidden::because("you may poll only your own id");
/// assert_eq!(refused.to_string(), "you may poll only your own id");
/// assert_eq!(Forbidden::new().to_string(), "this client may not poll this id");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forbidden {
    reason: Option<Cow<'static, str>>,
}

impl Forbidden {
    /// A refusal answered with a generic reason.
    pub fn new() -> Self {
        Forbidden::default()
    }

    /// A refusal whose reason is the body of the `403` (plain text, sent to
    /// the client: say nothing it must not know).
    pub fn because(reason: impl Into<Cow<'static, str>>) -> Self {
        Forbidden {
            reason: Some(reason.into()),
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            self.reason
                .as_deref()
                .unwrap_or("this client may not poll this id"),
        )
    }
}

impl std::error::Error for Forbidden {}

/// Why the layer answered a poll itself instead of parking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    MethodNotAllowed,
    MissingId {
        source: String,
    },
    /// The id was to come from a request extension an authentication layer
    /// puts there, and none did: the server's stack is wrong, not the request.
    MissingIdentity,
    Forbidden(Forbidden),
    InvalidId(InvalidId),
    MalformedCursor {
        source: &'static str,
        reason: &'static str,
    },
    MalformedTimeout,
    MalformedBatch,
    DuplicateParameter(&'static str),
    BodyTooLarge {
        limit: usize,
    },
    BodyUnreadable,
    BodyTimeout,
    TooManyForId {
        limit: usize,
    },
    TooManyParked,
    TooManyIds,
    ShuttingDown,
    StoreUnavailable,
}

impl Rejection {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::MissingId { .. }
            | Rejection::InvalidId(_)
            | Rejection::MalformedCursor { .. }
            | Rejection::MalformedTimeout
            | Rejection::MalformedBatch
            | Rejection::DuplicateParameter(_)
            | Rejection::BodyUnreadable => StatusCode::BAD_REQUEST,
            Rejection::MissingIdentity => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::Forbidden(_) => StatusCode::FORBIDDEN,
            Rejection::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::TooManyForId { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::TooManyParked
            | Rejection::TooManyIds
            | Rejection::ShuttingDown
            | Rejection::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the client should come back later (`Retry-After` is sent).
    pub(crate) fn retry_later(&self) -> bool {
        matches!(
            self,
            Rejection::TooManyForId { .. }
                | Rejection::TooManyParked
                | Rejection::TooManyIds
                | Rejection::ShuttingDown
                | Rejection::StoreUnavailable
        )
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::MethodNotAllowed => {
                f.write_str("a long-poll takes GET or HEAD; other methods are not allowed here")
            }
            Rejection::MissingId { source } => {
                write!(f, "missing client id: expected it in {source}")
            }
            Rejection::MissingIdentity => {
                f.write_str("the server could not tell who is polling; this is the server's fault")
            }
            Rejection::Forbidden(forbidden) => forbidden.fmt(f),
            Rejection::InvalidId(err) => err.fmt(f),
            Rejection::MalformedCursor { source, reason } => {
                write!(f, "malformed cursor in {source}: {reason}")
            }
            Rejection::MalformedTimeout => f.write_str(
                "malformed timeout: expected non-negative decimal seconds, such as 10 or 2.5",
            ),
            Rejection::MalformedBatch => {
                f.write_str("malformed batch: expected a whole number of events from 1")
            }
            Rejection::DuplicateParameter(name) => {
                write!(f, "the query parameter `{name}` is given more than once")
            }
            Rejection::BodyTooLarge { limit } => write!(
                f,
                "a long-poll request may carry at most {limit} bytes of body"
            ),
            Rejection::BodyUnreadable => f.write_str("the request body could not be read"),
            Rejection::BodyTimeout => {
                f.write_str("the request body did not arrive before the poll's timeout")
            }
            Rejection::TooManyForId { limit } => write!(
                f,
                "this client id already has {limit} polls waiting, its limit; retry later"
            ),
            Rejection::TooManyParked => {
                f.write_str("the server holds as many polls as it may; retry later")
            }
            Rejection::TooManyIds => {
                f.write_str("the server keeps as many client ids as it may; retry later")
            }
            Rejection::ShuttingDown => {
                f.write_str("the server is shutting down; retry, possibly elsewhere")
            }
            Rejection::StoreUnavailable => {
                f.write_str("the event store is unavailable; retry later")
            }
        }
    }
}
