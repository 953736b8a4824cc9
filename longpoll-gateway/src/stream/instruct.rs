//! The stream-mode instructions an upstream gives besides `Grip-Hold`:
//! `Grip-Keep-Alive`, `Grip-Link: <url>; rel=next`, `Grip-Set-Meta`, and
//! their `application/grip-instruct` forms. Pure parsing, as Pushpin reads
//! them (`src/handler/instruct.cpp`, `src/core/httpheaders.cpp`).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

/// Pushpin's keep-alive period when the upstream gives none.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(55);
/// The shortest keep-alive period: shorter ones are raised to it, as in
/// Pushpin.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Pushpin's next-link timeout when the upstream gives none.
const DEFAULT_NEXT_TIMEOUT: Duration = Duration::from_secs(120);
/// The most bytes of keep-alive data: it is written again and again.
pub const MAX_KEEP_ALIVE: usize = 64 * 1024;
/// The most bytes of subscription meta over all keys and values.
pub const MAX_META: usize = 16 * 1024;

/// `Grip-Keep-Alive`: bytes written to a held stream when it is quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    pub data: Bytes,
    pub every: Duration,
    pub mode: KeepAliveMode,
}

/// When keep-alive data is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveMode {
    /// After `every` without any other output (Pushpin's default).
    Idle,
    /// Every `every`, whatever else was written.
    Interval,
}

/// `Grip-Link: <url>; rel=next`: where the stream continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextLink {
    /// As given: absolute, or relative to the request's URL.
    pub url: String,
    /// Requested again after this long without an item on every channel of
    /// the stream (`timeout=`, default 120 s).
    pub timeout: Duration,
}

/// The subscription's meta (`Grip-Set-Meta`), read by the filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta(Vec<(String, String)>);

impl Meta {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Sets `key`, replacing an earlier value.
    pub fn set(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(name, _)| *name == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }

    fn size(&self) -> usize {
        self.0
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum()
    }

    fn checked(self, what: &str) -> Result<Meta, String> {
        if self.size() > MAX_META {
            return Err(format!("{what} is over {MAX_META} bytes"));
        }
        Ok(self)
    }
}

impl KeepAlive {
    /// `DATA[; format=raw|cstring|base64][; timeout=SECONDS][; mode=idle|interval]`.
    pub fn from_header(value: &str) -> Result<KeepAlive, String> {
        let (data, params) = parameters(value)
            .ok_or_else(|| format!("Grip-Keep-Alive {value:?} has an unterminated quote"))?;
        if data.is_empty() {
            return Err("Grip-Keep-Alive cannot be empty".into());
        }
        let mode = match param(&params, "mode") {
            None | Some("" | "idle") => KeepAliveMode::Idle,
            Some("interval") => KeepAliveMode::Interval,
            Some(other) => {
                return Err(format!(
                    "Grip-Keep-Alive mode {other:?} is not idle or interval"
                ));
            }
        };
        let every = match param(&params, "timeout") {
            None => DEFAULT_KEEP_ALIVE,
            Some(text) => seconds(text)
                .ok_or_else(|| format!("Grip-Keep-Alive timeout {text:?} is not whole seconds"))?,
        };
        let data = match param(&params, "format") {
            None | Some("" | "raw") => Bytes::copy_from_slice(data.as_bytes()),
            Some("cstring") => Bytes::from(
                unescape(data)
                    .ok_or_else(|| format!("Grip-Keep-Alive {data:?} is not a valid cstring"))?,
            ),
            Some("base64") => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|err| format!("Grip-Keep-Alive is not base64: {err}"))?,
            ),
            Some(other) => {
                return Err(format!(
                    "Grip-Keep-Alive format {other:?} is not raw, cstring or base64"
                ));
            }
        };
        KeepAlive::new(data, every, mode)
    }

    /// The `hold.keep-alive` object of `application/grip-instruct`:
    /// `content` or `content-bin` (base64), `timeout`, `mode`.
    pub fn from_json(value: &Value) -> Result<KeepAlive, String> {
        let object = value
            .as_object()
            .ok_or("hold.keep-alive is not an object")?;
        let data = match (object.get("content-bin"), object.get("content")) {
            (Some(Value::String(encoded)), _) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|err| format!("hold.keep-alive.content-bin is not base64: {err}"))?,
            ),
            (Some(_), _) => return Err("hold.keep-alive.content-bin is not a string".into()),
            (None, Some(Value::String(text))) => Bytes::copy_from_slice(text.as_bytes()),
            (None, Some(_)) => return Err("hold.keep-alive.content is not a string".into()),
            (None, None) => Bytes::new(),
        };
        let every = match object.get("timeout") {
            None | Some(Value::Null) => DEFAULT_KEEP_ALIVE,
            Some(value) => Duration::from_secs(
                value
                    .as_u64()
                    .ok_or("hold.keep-alive.timeout is not whole seconds")?,
            ),
        };
        let mode = match object.get("mode").and_then(Value::as_str) {
            None | Some("idle") => KeepAliveMode::Idle,
            Some("interval") => KeepAliveMode::Interval,
            Some(other) => {
                return Err(format!(
                    "hold.keep-alive.mode {other:?} is not idle or interval"
                ));
            }
        };
        KeepAlive::new(data, every, mode)
    }

    fn new(data: Bytes, every: Duration, mode: KeepAliveMode) -> Result<KeepAlive, String> {
        if data.len() > MAX_KEEP_ALIVE {
            return Err(format!(
                "the keep-alive data is over {MAX_KEEP_ALIVE} bytes"
            ));
        }
        Ok(KeepAlive {
            data,
            every: every.max(MIN_KEEP_ALIVE),
            mode,
        })
    }
}

/// What one `Grip-Link` item says: `<url>; rel=...; timeout=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub url: String,
    pub rel: String,
    pub timeout: Option<Duration>,
}

impl Link {
    /// The links of a `Grip-Link` value: items separated by commas outside
    /// `<...>` and quotes.
    pub fn parse_list(value: &str) -> Result<Vec<Link>, String> {
        let mut links = Vec::new();
        let (mut start, mut angled, mut quoted) = (0, false, false);
        let mut items = Vec::new();
        for (index, byte) in value.bytes().enumerate() {
            match byte {
                b'<' if !quoted => angled = true,
                b'>' if !quoted => angled = false,
                b'"' if !angled => quoted = !quoted,
                b',' if !angled && !quoted => {
                    items.push(&value[start..index]);
                    start = index + 1;
                }
                _ => {}
            }
        }
        items.push(&value[start..]);
        for item in items {
            if !item.trim().is_empty() {
                if let Some(link) = Link::parse(item)? {
                    links.push(link);
                }
            }
        }
        Ok(links)
    }

    /// One item of a `Grip-Link` list; `None` for an item without `rel`
    /// (Pushpin skips those).
    pub fn parse(item: &str) -> Result<Option<Link>, String> {
        let bad = || format!("Grip-Link {item:?} is not <url>; rel=...");
        let item = item.trim();
        // The URL may hold `;` and `,`: it ends at its `>`.
        let close = item.find('>').ok_or_else(bad)?;
        let url = item.strip_prefix('<').ok_or_else(bad)?[..close - 1].to_owned();
        if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let rest = item[close + 1..].trim_start();
        let rest = match rest.strip_prefix(';') {
            Some(rest) => rest,
            None if rest.is_empty() => rest,
            None => return Err(bad()),
        };
        let params = all_parameters(rest)
            .ok_or_else(|| format!("Grip-Link {item:?} has an unterminated quote"))?;
        let Some(rel) = param(&params, "rel") else {
            return Ok(None);
        };
        let timeout = param(&params, "timeout")
            .map(|text| {
                seconds(text)
                    .ok_or_else(|| format!("Grip-Link timeout {text:?} is not whole seconds"))
            })
            .transpose()?;
        Ok(Some(Link {
            url,
            rel: rel.to_owned(),
            timeout,
        }))
    }

    /// The next link this is, when `rel=next`.
    pub fn into_next(self) -> Option<NextLink> {
        (self.rel == "next").then(|| NextLink {
            url: self.url,
            timeout: self.timeout.unwrap_or(DEFAULT_NEXT_TIMEOUT),
        })
    }
}

impl Meta {
    /// `key="value", key2=value2` (repeatable header; later keys win).
    pub fn add_header(&mut self, value: &str) -> Result<(), String> {
        for item in split_outside_quotes(value, b',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let params = all_parameters(item)
                .ok_or_else(|| format!("Grip-Set-Meta {item:?} has an unterminated quote"))?;
            let Some((key, value)) = params.into_iter().next() else {
                return Err("Grip-Set-Meta cannot be empty".into());
            };
            if key.is_empty() {
                return Err(format!("Grip-Set-Meta {item:?} has no key"));
            }
            self.set(key, value);
        }
        let checked = std::mem::take(self).checked("Grip-Set-Meta")?;
        *self = checked;
        Ok(())
    }

    /// The `hold.meta` object of `application/grip-instruct`: string values.
    pub fn from_json(value: &Value) -> Result<Meta, String> {
        let object = value.as_object().ok_or("hold.meta is not an object")?;
        let mut meta = Meta::default();
        for (key, value) in object {
            let value = value
                .as_str()
                .ok_or_else(|| format!("hold.meta.{key} is not a string"))?;
            meta.set(key.clone(), value.to_owned());
        }
        meta.checked("hold.meta")
    }
}

fn seconds(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map(|(_, value)| value.as_str())
}

/// `first; key=value; key="quoted \" value"`: the first part raw (up to the
/// first `;`), then the parameters. `None` on an unterminated quote.
fn parameters(value: &str) -> Option<(&str, Vec<(String, String)>)> {
    let (first, rest) = value.split_once(';').unwrap_or((value, ""));
    Some((first.trim(), all_parameters(rest)?))
}

/// `key=value; key="quoted"; flag`, as Pushpin parses parameters: a quoted
/// value takes backslash escapes; a key without `=` has an empty value.
fn all_parameters(text: &str) -> Option<Vec<(String, String)>> {
    let bytes = text.as_bytes();
    let mut params = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = text[at..]
            .find(['=', ';'])
            .map_or(bytes.len(), |found| at + found);
        let key = text[at..end].trim().to_owned();
        if end == bytes.len() || bytes[end] == b';' {
            if !key.is_empty() {
                params.push((key, String::new()));
            }
            at = end + 1;
            continue;
        }
        // After `=`: a quoted or a plain value.
        let start = end + 1;
        let rest = text[start..].trim_start();
        let start = bytes.len() - rest.len();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut closed = None;
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        closed = Some(index);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let close = start + 1 + closed?;
            params.push((key, value));
            at = text[close..]
                .find(';')
                .map_or(bytes.len(), |found| close + found + 1);
        } else {
            let end = text[start..]
                .find(';')
                .map_or(bytes.len(), |found| start + found);
            params.push((key, text[start..end].trim().to_owned()));
            at = end + 1;
        }
    }
    Some(params)
}

/// Splits on `separator` outside double quotes (a backslash escapes the
/// next character inside them).
pub(crate) fn split_outside_quotes(value: &str, separator: u8) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, byte) in value.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if byte == separator && !quoted => {
                items.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
}

/// Pushpin's cstring: `\\`, `\r`, `\n` and `\xHH`; any other escaped
/// character is dropped, as Pushpin drops it.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        at += 1;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match *bytes.get(at)? {
            b'\\' => out.push(b'\\'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b'x' => {
                let hex = text.get(at + 1..at + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                at += 2;
            }
            _ => {}
        }
        at += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_headers_in_every_format() {
        // As django-grip writes django-eventstream's keep-alive.
        let sse =
            KeepAlive::from_header(r"event: keep-alive\ndata:\n\n; format=cstring; timeout=20")
                .unwrap();
        assert_eq!(sse.data, "event: keep-alive\ndata:\n\n");
        assert_eq!(sse.every, Duration::from_secs(20));
        assert_eq!(sse.mode, KeepAliveMode::Idle);
        let raw = KeepAlive::from_header(" :ping ; mode=interval").unwrap();
        assert_eq!(
            (&raw.data[..], raw.every),
            (&b":ping"[..], Duration::from_secs(55))
        );
        assert_eq!(raw.mode, KeepAliveMode::Interval);
        let bin = KeepAlive::from_header("AAH/; format=base64; timeout=0").unwrap();
        assert_eq!(
            (&bin.data[..], bin.every),
            (&b"\x00\x01\xff"[..], Duration::from_secs(1))
        );
        let hex = KeepAlive::from_header(r"a\x00\tb\\; format=cstring").unwrap();
        assert_eq!(&hex.data[..], b"a\x00b\\");
        for bad in [
            "; timeout=5",
            "x; format=rot13",
            "x; mode=sometimes",
            "x; timeout=-1",
            r"a\x0; format=cstring",
            "%%%; format=base64",
        ] {
            assert!(KeepAlive::from_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keep_alive_in_json() {
        let json = serde_json::json!({"content": "\n", "timeout": 3});
        let keep = KeepAlive::from_json(&json).unwrap();
        assert_eq!(
            (&keep.data[..], keep.every),
            (&b"\n"[..], Duration::from_secs(3))
        );
        let json = serde_json::json!({"content-bin": "AA==", "mode": "interval"});
        let keep = KeepAlive::from_json(&json).unwrap();
        assert_eq!(
            (&keep.data[..], keep.mode),
            (&b"\0"[..], KeepAliveMode::Interval)
        );
        assert!(KeepAlive::from_json(&serde_json::json!({"timeout": "9"})).is_err());
    }

    #[test]
    fn links_and_their_timeouts() {
        let next = Link::parse("</events?link=next&x=a;b,c>; rel=next; timeout=30")
            .unwrap()
            .unwrap();
        assert_eq!(
            next.clone().into_next().unwrap().timeout,
            Duration::from_secs(30)
        );
        assert_eq!(next.url, "/events?link=next&x=a;b,c");
        let both = Link::parse_list("</a,b>; rel=next, </gone>; rel=gone, </x>").unwrap();
        let rels: Vec<_> = both
            .iter()
            .map(|l| (l.url.as_str(), l.rel.as_str()))
            .collect();
        assert_eq!(rels, [("/a,b", "next"), ("/gone", "gone")]);
        let gone = Link::parse("</gone>; rel=\"gone\"").unwrap().unwrap();
        assert_eq!((gone.url.as_str(), gone.rel.as_str()), ("/gone", "gone"));
        assert!(gone.into_next().is_none());
        let default = Link::parse("<http://up/next>;rel=next").unwrap().unwrap();
        assert_eq!(
            default.into_next().unwrap().timeout,
            Duration::from_secs(120)
        );
        assert_eq!(Link::parse("</x>").unwrap(), None);
        assert!(Link::parse("/x; rel=next").is_err());
        assert!(Link::parse("<>; rel=next").is_err());
        assert!(Link::parse("</x>; rel=next; timeout=soon").is_err());
    }

    #[test]
    fn meta_as_django_grip_writes_it() {
        let mut meta = Meta::default();
        meta.add_header(r#"id_format="test:%(events-test)s", user="anonymous""#)
            .unwrap();
        meta.add_header(r#"user="a \"quoted\", name", empty="""#)
            .unwrap();
        assert_eq!(meta.get("id_format"), Some("test:%(events-test)s"));
        assert_eq!(meta.get("user"), Some(r#"a "quoted", name"#));
        assert_eq!(meta.get("empty"), Some(""));
        assert!(Meta::default().add_header(r#"a="open"#).is_err());
        assert!(Meta::default().add_header("=1").is_err());
        let json = Meta::from_json(&serde_json::json!({"user": "7"})).unwrap();
        assert_eq!(json.get("user"), Some("7"));
        assert!(Meta::from_json(&serde_json::json!({"user": 7})).is_err());
        let big = format!("k=\"{}\"", "v".repeat(MAX_META + 1));
        assert!(Meta::default().add_header(&big).is_err());
    }
}
