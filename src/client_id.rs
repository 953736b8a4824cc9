//! Where a poll's client id comes from, and what makes an id valid.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::header::{COOKIE, HeaderName};
use http::{Extensions, HeaderMap};
use percent_encoding::percent_decode_str;

use crate::error::Rejection;
use crate::id::{InvalidId, check_id};
use crate::route::RequestHead;

type IdFn = dyn for<'a> Fn(&RequestHead<'a>) -> Option<String> + Send + Sync;

/// Where the layer finds the client id of a poll.
///
/// Ids from the path and the query are percent-decoded; ids from headers,
/// cookies, extensions and closures are taken as they are. Every id is then
/// checked: it must not be empty, must be valid UTF-8 without control
/// characters, and must be at most the hub's
/// [`max_id_len`](crate::HubBuilder::max_id_len) bytes long (256 by default).
/// A poll whose id is missing or invalid is answered `400 Bad Request`,
/// except a missing [extension](ClientId::extension): an authentication
/// layer that lets a request through without it is a server
/// misconfiguration, answered `500 Internal Server Error` and logged as an
/// error.
///
/// To let a client poll only its own events, take the id from what an
/// authentication layer verified ([`ClientId::extension`] or
/// [`ClientId::from_fn`]) rather than from the path.
#[derive(Clone)]
pub struct ClientId {
    pub(crate) source: Source,
}

#[derive(Clone)]
pub(crate) enum Source {
    Path(Box<str>),
    Header(HeaderName),
    Query(Box<str>),
    Cookie(Box<str>),
    Extension(fn(&Extensions) -> Option<&str>, &'static str),
    Fn(Arc<IdFn>),
}

impl ClientId {
    /// The route parameter `name`, as in `.route("/poll/{name}")`.
    pub fn path(name: impl Into<String>) -> Self {
        ClientId {
            source: Source::Path(name.into().into_boxed_str()),
        }
    }

    /// The value of the request header `name` (the first, when repeated).
    ///
    /// # Panics
    /// When `name` is not a valid header name.
    pub fn header(name: impl AsRef<str>) -> Self {
        let name = HeaderName::try_from(name.as_ref())
            .unwrap_or_else(|_| panic!("{:?} is not a valid header name", name.as_ref()));
        ClientId {
            source: Source::Header(name),
        }
    }

    /// The query parameter `name` (the first, when repeated).
    pub fn query(name: impl Into<String>) -> Self {
        ClientId {
            source: Source::Query(name.into().into_boxed_str()),
        }
    }

    /// The cookie `name`.
    pub fn cookie(name: impl Into<String>) -> Self {
        ClientId {
            source: Source::Cookie(name.into().into_boxed_str()),
        }
    }

    /// A request extension of type `T`, as an authentication layer inserts it.
    ///
    /// ```
    /// use tower_longpoll::ClientId;
    ///
    /// #[derive(Clone)]
    /// struct User(String);
    /// impl AsRef<str> for User {
    ///     fn as_ref(&self) -> &str { &self.0 }
    /// }
    ///
    /// let id = ClientId::extension::<User>();
    /// ```
    pub fn extension<T>() -> Self
    where
        T: AsRef<str> + Send + Sync + 'static,
    {
        fn get<T: AsRef<str> + Send + Sync + 'static>(extensions: &Extensions) -> Option<&str> {
            extensions.get::<T>().map(AsRef::as_ref)
        }
        ClientId {
            source: Source::Extension(get::<T>, std::any::type_name::<T>()),
        }
    }

    /// Any function of the request head; `None` means the id is missing.
    ///
    /// ```
    /// use tower_longpoll::ClientId;
    ///
    /// // The tenant from a header and the user from the path: "acme/42".
    /// let id = ClientId::from_fn(|request| {
    ///     let tenant = request.headers().get("x-tenant")?.to_str().ok()?;
    ///     Some(format!("{tenant}/{}", request.path_param("user")?))
    /// });
    /// ```
    pub fn from_fn<F>(f: F) -> Self
    where
        F: for<'a> Fn(&RequestHead<'a>) -> Option<String> + Send + Sync + 'static,
    {
        ClientId {
            source: Source::Fn(Arc::new(f)),
        }
    }

    pub(crate) fn path_param(&self) -> Option<&str> {
        match &self.source {
            Source::Path(name) => Some(name),
            _ => None,
        }
    }

    /// Finds and checks the id of a request: the refusal says why there is
    /// none.
    pub(crate) fn extract(
        &self,
        head: &RequestHead<'_>,
        max_len: usize,
    ) -> Result<Arc<str>, Rejection> {
        let raw: Cow<'_, [u8]> = match &self.source {
            Source::Path(name) => {
                let raw = head.params.get(name).ok_or_else(|| self.missing())?;
                check_raw_len(raw, max_len)?;
                Cow::from(percent_decode_str(raw))
            }
            Source::Query(name) => {
                let query = head.uri.query().unwrap_or_default();
                let value =
                    crate::params::query_value(query, name).ok_or_else(|| self.missing())?;
                check_raw_len(value, max_len)?;
                crate::params::decode_query_component(value)
            }
            Source::Header(name) => {
                let value = head.headers.get(name).ok_or_else(|| self.missing())?;
                Cow::Borrowed(value.as_bytes())
            }
            Source::Cookie(name) => {
                let value = cookie_value(head.headers, name).ok_or_else(|| self.missing())?;
                Cow::Borrowed(value.as_bytes())
            }
            Source::Extension(get, _) => {
                let value = get(head.extensions).ok_or_else(|| self.missing())?;
                Cow::Borrowed(value.as_bytes())
            }
            Source::Fn(f) => {
                let value = f(head).ok_or_else(|| self.missing())?;
                Cow::Owned(value.into_bytes())
            }
        };
        let id = std::str::from_utf8(&raw).map_err(|_| Rejection::InvalidId(InvalidId::NotUtf8))?;
        check_id(id, max_len).map_err(Rejection::InvalidId)?;
        Ok(Arc::from(id))
    }

    /// Why a request has no id: the client's fault, or, for an extension
    /// that an authentication layer should have put there, the server's.
    fn missing(&self) -> Rejection {
        match &self.source {
            Source::Extension(..) => Rejection::MissingIdentity,
            _ => Rejection::MissingId {
                source: self.describe(),
            },
        }
    }

    /// The type an extension source looks for, when the id comes from one.
    pub(crate) fn extension_type(&self) -> Option<&'static str> {
        match &self.source {
            Source::Extension(_, type_name) => Some(type_name),
            _ => None,
        }
    }

    /// Where the id comes from, for error messages.
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            Source::Path(name) => format!("the path parameter `{name}`"),
            Source::Header(name) => format!("the header `{name}`"),
            Source::Query(name) => format!("the query parameter `{name}`"),
            Source::Cookie(name) => format!("the cookie `{name}`"),
            Source::Extension(_, type_name) => format!("the request extension `{type_name}`"),
            Source::Fn(_) => "the request".to_owned(),
        }
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientId").field(&self.describe()).finish()
    }
}

/// Refuses an over-long id before decoding it, measuring its decoded length
/// without allocating (a `+` decodes to one byte, like any other).
fn check_raw_len(raw: &str, max_len: usize) -> Result<(), Rejection> {
    if raw.len() > max_len {
        let len = percent_decode_str(raw).count();
        if len > max_len {
            return Err(Rejection::InvalidId(InvalidId::TooLong {
                len,
                limit: max_len,
            }));
        }
    }
    Ok(())
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::PathParams;

    fn head_of<'a>(request: &'a http::Request<()>, params: PathParams<'a>) -> RequestHead<'a> {
        RequestHead::of(request, params)
    }

    #[test]
    fn takes_ids_from_each_source() {
        let request = http::Request::builder()
            .uri("/poll?user=a%20b&user=second")
            .header("x-client", "from-header")
            .header("cookie", "theme=dark; sid=\"from-cookie\"")
            .body(())
            .unwrap();
        let head = head_of(&request, PathParams::default());
        assert_eq!(
            &*ClientId::query("user").extract(&head, 256).unwrap(),
            "a b"
        );
        assert_eq!(
            &*ClientId::header("x-client").extract(&head, 256).unwrap(),
            "from-header"
        );
        assert_eq!(
            &*ClientId::cookie("sid").extract(&head, 256).unwrap(),
            "from-cookie"
        );
        assert_eq!(
            ClientId::cookie("nope").extract(&head, 256),
            Err(Rejection::MissingId {
                source: "the cookie `nope`".into()
            })
        );
        assert_eq!(
            ClientId::path("client").extract(&head, 256),
            Err(Rejection::MissingId {
                source: "the path parameter `client`".into()
            })
        );
        let from_fn = ClientId::from_fn(|head| Some(head.uri().path().to_owned()));
        assert_eq!(&*from_fn.extract(&head, 256).unwrap(), "/poll");
    }

    #[test]
    fn extension_ids_come_from_the_auth_layer() {
        #[derive(Clone)]
        struct User(String);
        impl AsRef<str> for User {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        let mut request = http::Request::new(());
        let id = ClientId::extension::<User>();
        assert_eq!(
            id.extract(&head_of(&request, PathParams::default()), 256),
            Err(Rejection::MissingIdentity)
        );
        request.extensions_mut().insert(User("alice".into()));
        assert_eq!(
            &*id.extract(&head_of(&request, PathParams::default()), 256)
                .unwrap(),
            "alice"
        );
    }

    #[test]
    fn query_ids_are_decoded_strictly() {
        let request = http::Request::builder()
            .uri("/poll?user=%FF&c=%0A&e=")
            .body(())
            .unwrap();
        let head = head_of(&request, PathParams::default());
        assert_eq!(
            ClientId::query("user").extract(&head, 256),
            Err(Rejection::InvalidId(InvalidId::NotUtf8))
        );
        assert_eq!(
            ClientId::query("c").extract(&head, 256),
            Err(Rejection::InvalidId(InvalidId::ControlCharacter))
        );
        assert_eq!(
            ClientId::query("e").extract(&head, 256),
            Err(Rejection::InvalidId(InvalidId::Empty))
        );
    }
}
