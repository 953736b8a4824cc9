//! The URL a poll goes to: the caller's URL, its own query kept, with the
//! client's `since` (and `timeout`, when asked) in place of any given.

use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use percent_encoding::percent_decode_str;

use super::error::{Error, ErrorKind};

/// The parts of the poll URL that do not change from one poll to the next.
#[derive(Debug, Clone)]
pub(crate) struct PollTarget {
    scheme: Scheme,
    authority: Authority,
    path: String,
    /// The caller's query pairs, raw and joined by `&`, without `since` (and
    /// without `timeout` when the client sets it).
    query: String,
    /// `timeout=<seconds>`, when the client sets it.
    timeout: Option<String>,
}

/// What the URL itself said.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UrlParams {
    /// The `since` the URL carried, percent-decoded: where to start.
    pub(crate) since: Option<String>,
    /// The `timeout` the URL carried, when the client does not set one.
    pub(crate) timeout: Option<Duration>,
}

impl PollTarget {
    pub(crate) fn new(uri: &Uri, timeout: Option<Duration>) -> Result<(Self, UrlParams), Error> {
        let invalid = |why: &str| Error::new(ErrorKind::InvalidUrl, format!("{uri}: {why}"));
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("it has no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid("the scheme is neither http nor https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("it has no host"))?;
        let mut params = UrlParams::default();
        let mut kept = Vec::new();
        for pair in uri.query().unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "" => {}
                "since" => {
                    let since = percent_decode_str(&value.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned();
                    params.since = (!since.is_empty()).then_some(since);
                }
                "timeout" if timeout.is_some() => {}
                "timeout" => {
                    params.timeout = value
                        .parse::<f64>()
                        .ok()
                        .and_then(|secs| Duration::try_from_secs_f64(secs).ok());
                    kept.push(pair);
                }
                _ => kept.push(pair),
            }
        }
        let target = PollTarget {
            scheme,
            authority,
            path: uri.path().to_owned(),
            query: kept.join("&"),
            timeout: timeout.map(|timeout| format!("timeout={}", seconds(timeout))),
        };
        Ok((target, params))
    }

    /// The URI of the next poll, resuming after `cursor`.
    pub(crate) fn uri(&self, cursor: Option<&str>) -> Uri {
        let mut path_and_query = String::with_capacity(self.path.len() + self.query.len() + 64);
        path_and_query.push_str(&self.path);
        let mut separator = '?';
        let mut push = |pair: &str| {
            path_and_query.push(separator);
            path_and_query.push_str(pair);
            separator = '&';
        };
        if !self.query.is_empty() {
            push(&self.query);
        }
        if let Some(timeout) = &self.timeout {
            push(timeout);
        }
        if let Some(cursor) = cursor {
            let encoded: String = form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
            push(&format!("since={encoded}"));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .expect("built from a valid URI and percent-encoded parts")
    }
}

/// Seconds as the server reads them: a decimal with at most 3 fractional
/// digits.
fn seconds(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => duration.as_secs().to_string(),
        millis => format!("{}.{millis:03}", duration.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, timeout: Option<Duration>) -> (PollTarget, UrlParams) {
        PollTarget::new(&url.parse().unwrap(), timeout).unwrap()
    }

    #[test]
    fn the_cursor_is_added_and_the_query_kept() {
        let (target, params) = parse("http://127.0.0.1:3000/poll/alice?app=1&x", None);
        assert_eq!(params, UrlParams::default());
        assert_eq!(
            target.uri(None).to_string(),
            "http://127.0.0.1:3000/poll/alice?app=1&x"
        );
        assert_eq!(
            target.uri(Some("00ab-7")).to_string(),
            "http://127.0.0.1:3000/poll/alice?app=1&x&since=00ab-7"
        );
    }

    #[test]
    fn a_since_in_the_url_is_where_the_client_starts() {
        let (target, params) = parse("http://h/poll/a?since=1f-3&b=2", None);
        assert_eq!(params.since.as_deref(), Some("1f-3"));
        assert_eq!(target.uri(None).to_string(), "http://h/poll/a?b=2");
        assert_eq!(
            target.uri(Some("odd cursor&")).to_string(),
            "http://h/poll/a?b=2&since=odd+cursor%26"
        );
        let (_, params) = parse("http://h/poll/a?since=", None);
        assert_eq!(params.since, None);
    }

    #[test]
    fn the_timeout_replaces_the_urls_or_is_read_from_it() {
        let (target, _) = parse("http://h/p?timeout=9", Some(Duration::from_millis(2500)));
        assert_eq!(
            target.uri(Some("c")).to_string(),
            "http://h/p?timeout=2.500&since=c"
        );
        let (target, params) = parse("http://h/p?timeout=9", None);
        assert_eq!(params.timeout, Some(Duration::from_secs(9)));
        assert_eq!(target.uri(None).to_string(), "http://h/p?timeout=9");
        let (target, _) = parse("http://h/", Some(Duration::from_secs(20)));
        assert_eq!(target.uri(None).to_string(), "http://h/?timeout=20");
    }

    #[test]
    fn urls_that_cannot_be_polled_are_refused() {
        for url in ["/poll/a", "ftp://h/poll", "h:3000"] {
            let uri: Uri = url.parse().unwrap();
            let err = PollTarget::new(&uri, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}");
        }
    }
}
