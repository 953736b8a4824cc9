//! The parameters a poll may carry: its cursor, a shorter timeout, a batch size.

use std::borrow::Cow;
use std::time::Duration;

use http::HeaderMap;
use http::header::IF_NONE_MATCH;
use percent_encoding::percent_decode;

use crate::cursor::{Cursor, MAX_CURSOR_LEN};
use crate::error::Rejection;
use crate::response::LAST_EVENT_ID;

/// Where a client says it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// After this cursor.
    Cursor(Cursor),
    /// Before everything: `0`, for a client starting out that wants its very
    /// first events even if its first response is lost.
    Start,
}

/// The parameters of one poll, as parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PollParams {
    pub(crate) cursor: Option<Since>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) batch: Option<usize>,
}

/// Parses the query and headers of a poll. Unknown query parameters are the
/// application's and are left alone.
pub(crate) fn parse(query: Option<&str>, headers: &HeaderMap) -> Result<PollParams, Rejection> {
    let mut since = None;
    let mut timeout = None;
    let mut batch = None;
    for (name, value) in query_pairs(query.unwrap_or_default()) {
        let slot = match name {
            "since" => &mut since,
            "timeout" => &mut timeout,
            "batch" => &mut batch,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(Rejection::DuplicateParameter(name_of(name)));
        }
    }

    // The first cursor given wins; an empty one counts as not given, so that
    // `?since=` with nothing in it does not hide a header that has a cursor.
    let mut cursor = None;
    if let Some(since) = since.filter(|since| !since.is_empty()) {
        let decoded = decode_query_component(since);
        cursor = parse_cursor_bytes(&decoded, "the query parameter `since`")?;
    }
    if cursor.is_none() {
        if let Some(value) = headers.get(LAST_EVENT_ID) {
            cursor = parse_cursor_bytes(value.as_bytes(), "the header `Last-Event-ID`")?;
        }
    }
    if cursor.is_none() {
        if let Some(value) = headers.get(IF_NONE_MATCH).filter(|value| !value.is_empty()) {
            cursor = Some(parse_entity_tag(value.as_bytes())?);
        }
    }

    let timeout = timeout
        .map(|value| {
            let decoded = decode_query_component(value);
            parse_seconds(std::str::from_utf8(&decoded).map_err(|_| Rejection::MalformedTimeout)?)
        })
        .transpose()?;
    let batch = batch
        .map(|value| {
            let decoded = decode_query_component(value);
            parse_batch(std::str::from_utf8(&decoded).map_err(|_| Rejection::MalformedBatch)?)
        })
        .transpose()?;
    Ok(PollParams {
        cursor,
        timeout,
        batch,
    })
}

fn name_of(name: &str) -> &'static str {
    match name {
        "since" => "since",
        "timeout" => "timeout",
        _ => "batch",
    }
}

/// An empty cursor means "no cursor": clients that interpolate a missing
/// cursor into `?since=` or send an empty `Last-Event-ID` start afresh.
fn parse_cursor_bytes(bytes: &[u8], source: &'static str) -> Result<Option<Since>, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|_| Rejection::MalformedCursor {
        source,
        reason: "it is not valid UTF-8",
    })?;
    parse_cursor_text(text.trim(), source)
}

fn parse_cursor_text(text: &str, source: &'static str) -> Result<Option<Since>, Rejection> {
    match text {
        "" => return Ok(None),
        "0" => return Ok(Some(Since::Start)),
        _ => {}
    }
    text.parse()
        .map(|cursor| Some(Since::Cursor(cursor)))
        .map_err(
            |err: crate::cursor::ParseCursorError| Rejection::MalformedCursor {
                source,
                reason: err.reason(),
            },
        )
}

/// `If-None-Match` must hold exactly one entity tag, strong or weak, whose
/// value is a cursor (or `0`).
fn parse_entity_tag(value: &[u8]) -> Result<Since, Rejection> {
    let malformed = |reason| Rejection::MalformedCursor {
        source: "the header `If-None-Match`",
        reason,
    };
    let text = std::str::from_utf8(value)
        .map_err(|_| malformed("it is not valid UTF-8"))?
        .trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    if text == "*" {
        return Err(malformed("`*` is not a cursor"));
    }
    if text.len() > MAX_CURSOR_LEN + 2 {
        return Err(malformed("it is too long or holds several entity tags"));
    }
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or(malformed("expected one quoted entity tag, \"<cursor>\""))?;
    if inner == "0" {
        return Ok(Since::Start);
    }
    inner
        .parse()
        .map(Since::Cursor)
        .map_err(|err: crate::cursor::ParseCursorError| malformed(err.reason()))
}

/// Seconds as a non-negative decimal with at most 9 fractional digits.
fn parse_seconds(text: &str) -> Result<Duration, Rejection> {
    const MALFORMED: Rejection = Rejection::MalformedTimeout;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 9 || !digits(whole) {
        return Err(MALFORMED);
    }
    if text.contains('.') && (fraction.is_empty() || fraction.len() > 9 || !digits(fraction)) {
        return Err(MALFORMED);
    }
    let secs: u64 = whole.parse().map_err(|_| MALFORMED)?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        let scale = 10u32.pow(9 - fraction.len() as u32);
        fraction.parse::<u32>().map_err(|_| MALFORMED)? * scale
    };
    Ok(Duration::new(secs, nanos))
}

fn parse_batch(text: &str) -> Result<usize, Rejection> {
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::MalformedBatch);
    }
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(Rejection::MalformedBatch),
        Ok(n) => Ok(n),
    }
}

/// The raw `name=value` pairs of a query, not yet decoded.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The raw value of the first query parameter called `name`.
pub(crate) fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query_pairs(query).find_map(|(key, value)| (key == name).then_some(value))
}

/// Decodes a query component: `+` is a space, then percent-decoding, without
/// replacing invalid UTF-8 (the caller checks it).
pub(crate) fn decode_query_component(raw: &str) -> Cow<'_, [u8]> {
    if raw.contains('+') {
        let spaced: Vec<u8> = raw
            .bytes()
            .map(|b| if b == b'+' { b' ' } else { b })
            .collect();
        Cow::Owned(percent_decode(&spaced).collect())
    } else {
        percent_decode(raw.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_query(query: &str) -> Result<PollParams, Rejection> {
        parse(Some(query), &HeaderMap::new())
    }

    fn with_header(name: &'static str, value: &str) -> Result<PollParams, Rejection> {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().unwrap());
        parse(None, &headers)
    }

    #[test]
    fn cursor_sources_in_order_of_precedence() {
        let cursor = Cursor::new(7, 3);
        let text = cursor.to_string();
        assert_eq!(
            parse_query(&format!("since={text}")).unwrap().cursor,
            Some(Since::Cursor(cursor))
        );
        assert_eq!(
            with_header("last-event-id", &text).unwrap().cursor,
            Some(Since::Cursor(cursor))
        );
        assert_eq!(
            with_header("if-none-match", &format!("\"{text}\""))
                .unwrap()
                .cursor,
            Some(Since::Cursor(cursor))
        );
        assert_eq!(
            with_header("if-none-match", &format!("W/\"{text}\""))
                .unwrap()
                .cursor,
            Some(Since::Cursor(cursor))
        );

        let mut headers = HeaderMap::new();
        headers.insert(
            "last-event-id",
            Cursor::new(1, 1).to_string().parse().unwrap(),
        );
        headers.insert("if-none-match", "\"garbage\"".parse().unwrap());
        let both = parse(Some(&format!("since={text}")), &headers).unwrap();
        assert_eq!(
            both.cursor,
            Some(Since::Cursor(cursor)),
            "since wins over the headers"
        );
        assert_eq!(
            parse(None, &headers).unwrap().cursor,
            Some(Since::Cursor(Cursor::new(1, 1)))
        );
    }

    #[test]
    fn empty_cursors_mean_no_cursor_and_hide_nothing() {
        assert_eq!(parse_query("since=").unwrap().cursor, None);
        assert_eq!(with_header("last-event-id", "").unwrap().cursor, None);
        assert_eq!(with_header("if-none-match", "").unwrap().cursor, None);
        let cursor = Cursor::new(9, 9);
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", "".parse().unwrap());
        headers.insert("if-none-match", format!("\"{cursor}\"").parse().unwrap());
        assert_eq!(
            parse(Some("since="), &headers).unwrap().cursor,
            Some(Since::Cursor(cursor))
        );
    }

    #[test]
    fn zero_means_before_everything_in_every_source() {
        assert_eq!(parse_query("since=0").unwrap().cursor, Some(Since::Start));
        assert_eq!(
            with_header("last-event-id", "0").unwrap().cursor,
            Some(Since::Start)
        );
        assert_eq!(
            with_header("if-none-match", "\"0\"").unwrap().cursor,
            Some(Since::Start)
        );
        assert!(parse_query("since=00").is_err());
    }

    #[test]
    fn malformed_cursors_are_refused() {
        assert!(matches!(
            parse_query("since=abc"),
            Err(Rejection::MalformedCursor { .. })
        ));
        assert_eq!(
            parse_cursor_bytes(&[0xff], "x"),
            Err(Rejection::MalformedCursor {
                source: "x",
                reason: "it is not valid UTF-8"
            })
        );
        for value in ["*", "\"a\", \"b\"", "abc", "\"0000000000000000-1", "W/abc"] {
            assert!(
                matches!(
                    with_header("if-none-match", value),
                    Err(Rejection::MalformedCursor { .. })
                ),
                "{value}"
            );
        }
        assert!(matches!(
            with_header("last-event-id", "17"),
            Err(Rejection::MalformedCursor { .. })
        ));
    }

    #[test]
    fn timeouts_are_decimal_seconds() {
        assert_eq!(
            parse_query("timeout=5").unwrap().timeout,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_query("timeout=0.25").unwrap().timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_query("timeout=0").unwrap().timeout,
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "-1",
            "1e3",
            "1.",
            ".5",
            "abc",
            "1.0000000001",
            "1234567890",
            "NaN",
            "1,5",
            "+1",
        ] {
            assert_eq!(
                parse_query(&format!("timeout={bad}")),
                Err(Rejection::MalformedTimeout),
                "{bad}"
            );
        }
    }

    #[test]
    fn batches_are_positive_integers() {
        assert_eq!(parse_query("batch=16").unwrap().batch, Some(16));
        for bad in ["0", "", "-1", "x", "9999999"] {
            assert_eq!(
                parse_query(&format!("batch={bad}")),
                Err(Rejection::MalformedBatch),
                "{bad}"
            );
        }
    }

    #[test]
    fn repeated_parameters_are_refused_and_others_ignored() {
        assert_eq!(
            parse_query("timeout=1&timeout=2"),
            Err(Rejection::DuplicateParameter("timeout"))
        );
        assert_eq!(parse_query("a=1&&b&since=").unwrap(), PollParams::default());
    }

    proptest! {
        #[test]
        fn arbitrary_queries_never_panic(query in "[a-z=&%+.0-9\\-]{0,60}") {
            let _ = parse_query(&query);
        }

        #[test]
        fn any_accepted_timeout_round_trips(secs in 0u64..1_000_000, millis in 0u32..1000) {
            let text = format!("{secs}.{millis:03}");
            prop_assert_eq!(parse_seconds(&text).ok(), Some(Duration::new(secs, millis * 1_000_000)));
        }
    }
}
