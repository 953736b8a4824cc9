//! Header rules of a proxy: hop-by-hop headers and the `Grip-*` family.

use http::HeaderMap;
use http::header::{
    CONNECTION, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// The client's address, appended by each proxy on the way.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `http` or `https`, as the client spoke to the gateway.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a header belongs to GRIP (`Grip-*`), which only the gateway and
/// the upstream speak.
pub fn is_grip(name: &HeaderName) -> bool {
    name.as_str().starts_with("grip-")
}

/// Removes the headers of one hop (RFC 9110 §7.6.1): the fixed list and
/// every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Removes every `Grip-*` header.
pub fn remove_grip(headers: &mut HeaderMap) {
    let grip: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_grip(name))
        .cloned()
        .collect();
    for name in grip {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_grip_headers_go() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("grip-sig", "forged"),
            ("grip-hold", "response"),
            ("content-type", "text/plain"),
            ("x-kept", "yes"),
        ] {
            headers.append(
                HeaderName::try_from(name).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut headers);
        remove_grip(&mut headers);
        let mut left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }
}
