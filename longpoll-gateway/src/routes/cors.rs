//! `aco` (automatic cross-origin): the CORS headers Pushpin adds to every
//! response of such a route, each only where the backend set none.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderValue};

/// Headers any script may read without being told.
const SIMPLE: &[&str] = &[
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
];

/// What the request asked for, kept until its response.
pub struct Asked {
    origin: Option<HeaderValue>,
    method: Option<HeaderValue>,
    headers: Vec<HeaderValue>,
}

impl Asked {
    pub fn of(request: &HeaderMap) -> Asked {
        Asked {
            origin: request.get(ORIGIN).filter(|v| !v.is_empty()).cloned(),
            method: request
                .get(ACCESS_CONTROL_REQUEST_METHOD)
                .filter(|v| !v.is_empty())
                .cloned(),
            headers: request
                .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
                .iter()
                .filter(|v| !v.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// Adds what the response lacks: the methods asked (or the usual ones),
    /// the headers asked, its own non-simple headers exposed, credentials
    /// allowed, the request's origin (or `*`), an hour's max age.
    pub fn answer(self, response: &mut HeaderMap) {
        if !response.contains_key(ACCESS_CONTROL_ALLOW_METHODS) {
            let methods = self.method.unwrap_or(HeaderValue::from_static(
                "OPTIONS, HEAD, GET, POST, PUT, DELETE",
            ));
            response.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if !response.contains_key(ACCESS_CONTROL_ALLOW_HEADERS) && !self.headers.is_empty() {
            if let Some(value) = join(self.headers.iter().map(HeaderValue::as_bytes)) {
                response.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
            }
        }
        if !response.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS) {
            let mut names: Vec<&str> = Vec::new();
            for name in response.keys() {
                let name = name.as_str();
                if !SIMPLE.contains(&name)
                    && !name.starts_with("access-control-")
                    && !name.starts_with("grip-")
                    && !names.contains(&name)
                {
                    names.push(name);
                }
            }
            if let Some(value) = join(names.iter().map(|n| n.as_bytes())) {
                response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, value);
            }
        }
        if !response.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS) {
            response.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !response.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
            let origin = self.origin.unwrap_or(HeaderValue::from_static("*"));
            response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        if !response.contains_key(ACCESS_CONTROL_MAX_AGE) {
            response.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
        }
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a [u8]>) -> Option<HeaderValue> {
    let mut out = Vec::new();
    for part in parts {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_backend_set_stays_and_the_rest_is_added() {
        let mut request = HeaderMap::new();
        request.insert(ORIGIN, HeaderValue::from_static("https://app.test"));
        request.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-token"),
        );
        let mut response = HeaderMap::new();
        response.insert("content-type", HeaderValue::from_static("text/plain"));
        response.insert("x-custom", HeaderValue::from_static("1"));
        response.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("5"));
        Asked::of(&request).answer(&mut response);
        assert_eq!(response[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.test");
        assert_eq!(response[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(response[ACCESS_CONTROL_ALLOW_HEADERS], "x-token");
        assert_eq!(
            response[ACCESS_CONTROL_ALLOW_METHODS],
            "OPTIONS, HEAD, GET, POST, PUT, DELETE"
        );
        assert_eq!(response[ACCESS_CONTROL_EXPOSE_HEADERS], "x-custom");
        assert_eq!(response[ACCESS_CONTROL_MAX_AGE], "5");

        let mut bare = HeaderMap::new();
        Asked::of(&HeaderMap::new()).answer(&mut bare);
        assert_eq!(bare[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!bare.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS));
    }
}
