//! The `http-stream` publish format, and how its items are kept in the
//! stream log: each item is one event of the channel's log in the stream
//! hub, whose bytes carry the item's id, prev-id, meta and action ahead of
//! its content, so that a stream reads all it needs from the log itself
//! (also when the log is in Redis and the publish went through another
//! gateway).

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::Value;
use tower_longpoll::Event;

/// The most bytes of an item's content, as for `http-response` bodies.
pub const MAX_CONTENT: usize = crate::items::MAX_EVENT;
/// The most bytes of an item's id or prev-id.
pub const MAX_ID: usize = 1024;
/// The most bytes of an item's meta over all keys and values.
pub const MAX_META: usize = 16 * 1024;
/// Room for the id, prev-id, meta and filters of a kept item besides its
/// content: the stream hub's event limit is the content's plus this.
pub const MAX_OVERHEAD: usize = 2 * MAX_ID + MAX_META + 4096;

/// Marks a kept stream item (and the version of its layout).
const MAGIC: &[u8] = b"GRIPS1";
/// A length that stands for "absent".
const NONE: u32 = u32::MAX;

/// What an `http-stream` item asks of the streams on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Append the content.
    Send,
    /// End the streams cleanly.
    Close,
    /// Fetch the stream's next link now (a stream without one ignores it).
    Hint,
}

/// An `http-stream` item with what the publish item around it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamItem {
    pub id: Option<String>,
    pub prev_id: Option<String>,
    pub meta: Vec<(String, String)>,
    pub action: Action,
    /// `content-filters`: when given, the content-changing filters a stream's
    /// channel must have for the item to be sent to it.
    pub content_filters: Option<Vec<String>>,
    pub content: Bytes,
}

/// The format part of an item: `action`, `content` or `content-bin`
/// (base64), `content-filters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub action: Action,
    pub content_filters: Option<Vec<String>>,
    pub content: Bytes,
}

/// Reads an `http-stream` object; errors name `field`.
pub fn parse(value: &Value, field: &str) -> Result<Format, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("{field} is not an object"))?;
    let action = match object.get("action") {
        None | Some(Value::Null) => Action::Send,
        Some(Value::String(action)) => match action.as_str() {
            "send" => Action::Send,
            "close" => Action::Close,
            "hint" => Action::Hint,
            other => {
                return Err(format!(
                    "{field}.action {other:?} is not send, close or hint"
                ));
            }
        },
        Some(_) => return Err(format!("{field}.action is not a string")),
    };
    if action != Action::Send {
        return Ok(Format {
            action,
            content_filters: None,
            content: Bytes::new(),
        });
    }
    let content_filters = match object.get("content-filters") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|name| name.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    format!("{field}.content-filters has a name that is not a string")
                })?,
        ),
        Some(_) => return Err(format!("{field}.content-filters is not a list")),
    };
    let content = match (object.get("content-bin"), object.get("content")) {
        (Some(Value::String(encoded)), _) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|err| format!("{field}.content-bin is not base64: {err}"))?,
        ),
        (Some(_), _) => return Err(format!("{field}.content-bin is not a string")),
        (None, Some(Value::String(text))) => Bytes::from(text.clone()),
        (None, Some(_)) => return Err(format!("{field}.content is not a string")),
        (None, None) => {
            return Err(format!("{field} has neither content nor content-bin"));
        }
    };
    if content.len() > MAX_CONTENT {
        return Err(format!(
            "{field}: the content is {} bytes, more than the limit of {MAX_CONTENT}",
            content.len()
        ));
    }
    Ok(Format {
        action,
        content_filters,
        content,
    })
}

impl StreamItem {
    /// The event that keeps this item in the stream log.
    pub fn to_event(&self) -> Event {
        let mut out = BytesMut::with_capacity(64 + self.content.len());
        out.put_slice(MAGIC);
        out.put_u8(match self.action {
            Action::Send => 0,
            Action::Close => 1,
            Action::Hint => 2,
        });
        put_optional(&mut out, self.id.as_deref());
        put_optional(&mut out, self.prev_id.as_deref());
        out.put_u32(self.meta.len() as u32);
        for (key, value) in &self.meta {
            put_str(&mut out, key);
            put_str(&mut out, value);
        }
        match &self.content_filters {
            None => out.put_u32(NONE),
            Some(names) => {
                out.put_u32(names.len() as u32);
                for name in names {
                    put_str(&mut out, name);
                }
            }
        }
        out.put_slice(&self.content);
        Event::new(out.freeze())
    }
}

/// A kept item read back from the log, borrowing its strings from the
/// event's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct KeptItem<'a> {
    pub id: Option<&'a str>,
    pub prev_id: Option<&'a str>,
    pub meta: Vec<(&'a str, &'a str)>,
    pub action: Action,
    pub content_filters: Option<Vec<&'a str>>,
    pub content: Bytes,
}

impl<'a> KeptItem<'a> {
    /// Reads an event of the stream log; `None` for bytes this gateway did
    /// not write (such an event is skipped).
    pub fn decode(event: &'a Event) -> Option<KeptItem<'a>> {
        let data = event.data();
        let mut rest: &'a [u8] = data.as_ref().strip_prefix(MAGIC)?;
        let action = match take_u8(&mut rest)? {
            0 => Action::Send,
            1 => Action::Close,
            2 => Action::Hint,
            _ => return None,
        };
        let id = take_optional(&mut rest)?;
        let prev_id = take_optional(&mut rest)?;
        let count = take_u32(&mut rest)? as usize;
        let mut meta = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            meta.push((take_str(&mut rest)?, take_str(&mut rest)?));
        }
        let content_filters = match take_u32(&mut rest)? {
            NONE => None,
            count => {
                let mut names = Vec::with_capacity((count as usize).min(8));
                for _ in 0..count {
                    names.push(take_str(&mut rest)?);
                }
                Some(names)
            }
        };
        let content = data.slice(data.len() - rest.len()..);
        Some(KeptItem {
            id,
            prev_id,
            meta,
            action,
            content_filters,
            content,
        })
    }
}

fn put_str(out: &mut BytesMut, text: &str) {
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
}

fn put_optional(out: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_str(out, text),
        None => out.put_u32(NONE),
    }
}

fn take_u8(rest: &mut &[u8]) -> Option<u8> {
    (!rest.is_empty()).then(|| rest.get_u8())
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    (rest.len() >= 4).then(|| rest.get_u32())
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let len = take_u32(rest)? as usize;
    let text = std::str::from_utf8(rest.get(..len)?).ok()?;
    *rest = &rest[len..];
    Some(text)
}

fn take_optional<'a>(rest: &mut &'a [u8]) -> Option<Option<&'a str>> {
    if rest.len() >= 4 && rest[..4] == NONE.to_be_bytes() {
        *rest = &rest[4..];
        return Some(None);
    }
    take_str(rest).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formats_as_gripcontrol_and_pushpin_send_them() {
        let text = parse(&json!({"content": "hello\n"}), "f").unwrap();
        assert_eq!(
            (text.action, &text.content[..]),
            (Action::Send, &b"hello\n"[..])
        );
        let bin = parse(
            &json!({"content-bin": "AAH/", "content-filters": ["build-id"]}),
            "f",
        )
        .unwrap();
        assert_eq!(&bin.content[..], b"\x00\x01\xff");
        assert_eq!(bin.content_filters, Some(vec!["build-id".to_owned()]));
        assert_eq!(
            parse(&json!({"action": "close"}), "f").unwrap().action,
            Action::Close
        );
        assert_eq!(
            parse(&json!({"action": "hint"}), "f").unwrap().action,
            Action::Hint
        );
        for (bad, says) in [
            (json!({}), "f has neither content nor content-bin"),
            (json!({"content": 1}), "f.content is not a string"),
            (json!({"content-bin": "%%"}), "f.content-bin is not base64"),
            (json!({"action": "refresh"}), "f.action \"refresh\""),
            (
                json!({"content": "", "content-filters": "build-id"}),
                "f.content-filters",
            ),
            (json!([]), "f is not an object"),
        ] {
            let err = parse(&bad, "f").unwrap_err();
            assert!(err.starts_with(says), "{err}");
        }
    }

    #[test]
    fn kept_items_read_back_whole() {
        let item = StreamItem {
            id: Some("7".into()),
            prev_id: None,
            meta: vec![("skip_users".into(), "a,b".into()), ("".into(), "ü".into())],
            action: Action::Send,
            content_filters: Some(vec!["build-id".into()]),
            content: Bytes::from_static(b"id: %I\n\xff"),
        };
        let event = item.to_event();
        let kept = KeptItem::decode(&event).unwrap();
        assert_eq!(kept.id, Some("7"));
        assert_eq!(kept.prev_id, None);
        assert_eq!(kept.meta, [("skip_users", "a,b"), ("", "ü")]);
        assert_eq!(kept.content_filters, Some(vec!["build-id"]));
        assert_eq!(&kept.content[..], b"id: %I\n\xff");
        let close = StreamItem {
            id: None,
            prev_id: Some(String::new()),
            meta: Vec::new(),
            action: Action::Close,
            content_filters: None,
            content: Bytes::new(),
        };
        let event = close.to_event();
        let kept = KeptItem::decode(&event).unwrap();
        assert_eq!((kept.action, kept.prev_id), (Action::Close, Some("")));
        assert!(KeptItem::decode(&Event::new("GRIPS1\x07")).is_none());
        assert!(KeptItem::decode(&Event::new("plain")).is_none());
        let truncated = Event::new(item.to_event().data().slice(..12));
        assert!(KeptItem::decode(&truncated).is_none());
    }
}
