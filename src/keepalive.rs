//! What a poll gets when its timeout fires with no event.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};

/// The response to a poll whose timeout fired before any event came.
///
/// Whatever the response, the layer adds `Cache-Control: no-store` and an
/// `ETag` holding the client's cursor unless the response sets them, so a
/// client can always resume from the last response it got.
///
/// ```
/// use tower_longpoll::KeepAlive;
///
/// let default = KeepAlive::no_content();           // 204, empty
/// let text = KeepAlive::text("no news\n");         // 200 text/plain
/// let json = KeepAlive::response(
///     http::Response::builder()
///         .header("content-type", "application/json")
///         .body(bytes::Bytes::from_static(b"{\"events\":[]}"))
///         .unwrap(),
/// );
/// ```
#[derive(Clone)]
pub struct KeepAlive {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    NoContent,
    Fixed {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Fn(Arc<dyn Fn() -> http::Response<Bytes> + Send + Sync>),
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self::no_content()
    }
}

impl KeepAlive {
    /// `204 No Content`: the default.
    pub fn no_content() -> Self {
        KeepAlive {
            kind: Kind::NoContent,
        }
    }

    /// `200 OK` with this body as `text/plain; charset=utf-8`.
    pub fn text(body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        KeepAlive {
            kind: Kind::Fixed {
                status: StatusCode::OK,
                headers,
                body: body.into(),
            },
        }
    }

    /// This response, every time: its status, headers and body.
    pub fn response(response: http::Response<Bytes>) -> Self {
        let (parts, body) = response.into_parts();
        KeepAlive {
            kind: Kind::Fixed {
                status: parts.status,
                headers: parts.headers,
                body,
            },
        }
    }

    /// A response made by `f` for each keepalive.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn() -> http::Response<Bytes> + Send + Sync + 'static,
    {
        KeepAlive {
            kind: Kind::Fn(Arc::new(f)),
        }
    }

    pub(crate) fn make(&self) -> (StatusCode, HeaderMap, Bytes) {
        match &self.kind {
            Kind::NoContent => (StatusCode::NO_CONTENT, HeaderMap::new(), Bytes::new()),
            Kind::Fixed {
                status,
                headers,
                body,
            } => (*status, headers.clone(), body.clone()),
            Kind::Fn(f) => {
                let (parts, body) = f().into_parts();
                (parts.status, parts.headers, body)
            }
        }
    }
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::NoContent => f.write_str("KeepAlive::no_content()"),
            Kind::Fixed { status, .. } => write!(f, "KeepAlive::response({status})"),
            Kind::Fn(_) => f.write_str("KeepAlive::from_fn(..)"),
        }
    }
}
