//! Errors a [`LongPollClient`](super::LongPollClient) yields: the ones that
//! retrying will not cure.

use std::fmt;

use http::StatusCode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error that retrying cannot cure; the stream ends after yielding it.
///
/// Connection failures, timeouts, `408`, `429` and `5xx` are not errors: the
/// client backs off and tries again.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    detail: String,
    source: Option<BoxError>,
}

/// What went wrong, for [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL is not an absolute `http` or `https` URL.
    InvalidUrl,
    /// The server answered with a status that asking again will not change
    /// (`400`, `401`, `403`, `404`, `405`, `413`, a redirect, …).
    Status(StatusCode),
    /// An event was larger than [`Builder::max_event_bytes`](super::Builder::max_event_bytes).
    TooLarge,
    /// The server's answer broke the long-poll protocol (an event without
    /// an `ETag`): resuming from it is impossible.
    Protocol,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status the server refused the poll with, if it did.
    pub fn status(&self) -> Option<StatusCode> {
        match self.kind {
            ErrorKind::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The server's explanation (the start of the response body) or the
    /// client's, as text.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::InvalidUrl => write!(f, "invalid long-poll URL: {}", self.detail),
            ErrorKind::Status(status) => {
                write!(f, "the server refused the poll with {status}")?;
                if self.detail.is_empty() {
                    Ok(())
                } else {
                    write!(f, ": {}", self.detail)
                }
            }
            ErrorKind::TooLarge => write!(f, "event too large: {}", self.detail),
            ErrorKind::Protocol => write!(f, "not a long-poll response: {}", self.detail),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}
