//! [`LongPollJs`]: a service that answers with the browser client.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower_service::Service;

use super::LONGPOLL_JS;

/// The module's entity tag: a hash of its bytes, computed at compile time,
/// so it changes exactly when the file does.
const ETAG_VALUE: HeaderValue = HeaderValue::from_static(match std::str::from_utf8(&ETAG_BYTES) {
    Ok(etag) => etag,
    Err(_) => panic!("an entity tag of hex digits is UTF-8"),
});
const ETAG_BYTES: [u8; 18] = quoted_hex(fnv1a(LONGPOLL_JS.as_bytes()));

/// FNV-1a, 64 bits: enough to tell versions of one file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"<16 hex digits>"`.
const fn quoted_hex(value: u64) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

/// Serves [`LONGPOLL_JS`] at whatever path it is mounted on.
///
/// - `GET`: `200`, the module, `Content-Type: text/javascript;
///   charset=utf-8`, `Content-Length`, `ETag` (a hash of the file),
///   `Cache-Control: no-cache` (browsers keep it and revalidate it, so a
///   new version of the crate reaches them at once) and
///   `X-Content-Type-Options: nosniff`;
/// - with an `If-None-Match` that names its `ETag` (or `*`): `304 Not
///   Modified`, no body;
/// - `HEAD`: the headers of the `GET`, no body;
/// - any other method: `405` with `Allow: GET, HEAD`.
///
/// The request's path, query and body are not looked at. It never fails and
/// allocates nothing per request.
///
/// ```
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_longpoll::browser::{LONGPOLL_JS, LongPollJs};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let response = LongPollJs::new()
///     .oneshot(Request::get("/longpoll.js").body(()).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(response.headers()["content-length"], LONGPOLL_JS.len().to_string());
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LongPollJs {
    _private: (),
}

impl LongPollJs {
    /// The service.
    pub const fn new() -> Self {
        LongPollJs { _private: () }
    }

    fn respond(method: &Method, if_none_match: Option<&HeaderValue>) -> Response<ScriptBody> {
        let mut response = Response::new(ScriptBody::empty());
        if method != Method::GET && method != Method::HEAD {
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if if_none_match.is_some_and(names_this_version) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
        }
        let modified = response.status() == StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(ETAG, ETAG_VALUE);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if !modified {
            return response;
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(LONGPOLL_JS.len()));
        if method == Method::GET {
            *response.body_mut() = ScriptBody::script();
        }
        response
    }
}

/// Whether an `If-None-Match` list names this version (weak comparison, as
/// `If-None-Match` asks for), or is `*`.
fn names_this_version(value: &HeaderValue) -> bool {
    let Ok(list) = value.to_str() else {
        return false;
    };
    let ours = &ETAG_BYTES[..];
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

impl<B> Service<Request<B>> for LongPollJs {
    type Response = Response<ScriptBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ScriptBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(Self::respond(
            request.method(),
            request.headers().get(IF_NONE_MATCH),
        )))
    }
}

/// The body [`LongPollJs`] answers with: the module in one chunk, or
/// nothing.
#[derive(Debug)]
pub struct ScriptBody {
    data: Option<Bytes>,
}

impl ScriptBody {
    fn empty() -> Self {
        ScriptBody { data: None }
    }

    fn script() -> Self {
        ScriptBody {
            data: Some(Bytes::from_static(LONGPOLL_JS.as_bytes())),
        }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(method: Method, if_none_match: Option<&str>) -> Response<ScriptBody> {
        let mut request = Request::builder().method(method).uri("/any/path?x=1");
        if let Some(tag) = if_none_match {
            request = request.header(IF_NONE_MATCH, tag);
        }
        LongPollJs::new()
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn get_serves_the_module_with_its_tag() {
        let response = call(Method::GET, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[CONTENT_LENGTH], LONGPOLL_JS.len().to_string());
        let etag = headers[ETAG].to_str().unwrap().to_owned();
        assert_eq!(etag.len(), 18);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert_eq!(etag, format!("\"{:016x}\"", fnv1a(LONGPOLL_JS.as_bytes())));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, LONGPOLL_JS.as_bytes());
    }

    #[tokio::test]
    async fn a_known_tag_is_not_modified_and_head_has_no_body() {
        let etag = call(Method::GET, None).await.headers()[ETAG].clone();
        let etag = etag.to_str().unwrap();
        for tag in [
            etag.to_owned(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".to_owned(),
        ] {
            let response = call(Method::GET, Some(&tag)).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(response.headers()[ETAG], etag);
            assert!(response.body().is_end_stream());
        }
        let stale = call(Method::GET, Some("\"0000000000000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);

        let head = call(Method::HEAD, None).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()[CONTENT_LENGTH],
            LONGPOLL_JS.len().to_string()
        );
        assert!(head.body().is_end_stream());
    }

    #[tokio::test]
    async fn other_methods_are_not_allowed() {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let response = call(method.clone(), None).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(response.headers()[ALLOW], "GET, HEAD");
            assert!(response.body().is_end_stream());
        }
    }
}
