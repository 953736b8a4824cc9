//! The EPCP publish body: `{"items": [...]}`, each item a channel, an
//! optional id, prev-id and meta, and its formats: `http-response` (for
//! response holds and `--route` polls), `http-stream` (for held streams) and
//! `ws-message` (for WebSocket-over-HTTP sockets).
//! Pure parsing, no state: the publish listener, the tests and the fuzz
//! target (`fuzz/`) share it.

use base64::Engine;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Response};
use hyper::ext::ReasonPhrase;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tower_longpoll::Event;

use crate::grip::{self, Whole};
use crate::http_stream::{self, StreamItem};

/// The largest event body an item may carry.
pub const MAX_EVENT: usize = 1024 * 1024;

/// The longest channel name, as the hub's id limit.
pub const MAX_CHANNEL: usize = 256;

/// Carries a published `http-response`'s reason phrase with its event
/// through the hub (memory or Redis): a `Grip-*` header, which the gateway
/// turns back into the reason phrase and never sends as a header.
pub const GRIP_REASON: HeaderName = HeaderName::from_static("grip-reason");

/// One item, checked, ready to publish.
#[derive(Debug)]
pub struct Item {
    pub channel: String,
    pub id: Option<String>,
    /// The `http-response` format as an event: what response holds and
    /// `--route` polls on the channel get.
    pub response: Option<Event>,
    /// The `http-stream` format with the item's id, prev-id and meta: what
    /// held streams on the channel get.
    pub stream: Option<StreamItem>,
    /// The `ws-message` format: what sockets subscribed to the channel get.
    pub ws: Option<Message>,
}

/// The items of a publish body.
#[derive(Debug, Default)]
pub struct Items {
    /// The items to publish, in order.
    pub items: Vec<Item>,
}

/// Checks every item of a publish body; the error names the item and the
/// field (`items[2].formats.http-response.code ...`) and is the whole
/// answer: a `400` publishes nothing.
pub fn parse(body: &[u8]) -> Result<Items, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))?;
    let list = value
        .get("items")
        .and_then(Value::as_array)
        .ok_or("items is missing or not an array")?;
    let mut parsed = Items {
        items: Vec::with_capacity(list.len()),
    };
    for (index, item) in list.iter().enumerate() {
        let at = |field: &str| format!("items[{index}].{field}");
        let object = item
            .as_object()
            .ok_or_else(|| format!("items[{index}] is not an object"))?;
        let channel = object
            .get("channel")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{} is missing or not a string", at("channel")))?;
        if channel.is_empty()
            || channel.len() > MAX_CHANNEL
            || channel.chars().any(char::is_control)
        {
            return Err(format!(
                "{} must be 1 to {MAX_CHANNEL} bytes without control characters",
                at("channel")
            ));
        }
        let optional_string = |field: &str| match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("{} is not a string", at(field))),
        };
        let id = optional_string("id")?;
        let prev_id = optional_string("prev-id")?;
        for (field, value) in [("id", &id), ("prev-id", &prev_id)] {
            if value
                .as_ref()
                .is_some_and(|value| value.len() > http_stream::MAX_ID)
            {
                return Err(format!(
                    "{} is over {} bytes",
                    at(field),
                    http_stream::MAX_ID
                ));
            }
        }
        let meta = match object.get("meta") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => {
                let mut meta = Vec::with_capacity(map.len());
                for (key, value) in map {
                    let value = value
                        .as_str()
                        .ok_or_else(|| format!("{} is not a string", at(&format!("meta.{key}"))))?;
                    meta.push((key.clone(), value.to_owned()));
                }
                let size: usize = meta
                    .iter()
                    .map(|(k, v): &(String, String)| k.len() + v.len())
                    .sum();
                if size > http_stream::MAX_META {
                    return Err(format!(
                        "{} is over {} bytes",
                        at("meta"),
                        http_stream::MAX_META
                    ));
                }
                meta
            }
            Some(_) => return Err(format!("{} is not an object", at("meta"))),
        };
        // EPCP puts formats under `formats`; gripcontrol and older
        // publishers put them on the item itself.
        let (formats, prefix) = match object.get("formats") {
            Some(Value::Object(formats)) => (formats, at("formats.")),
            Some(_) => return Err(format!("{} is not an object", at("formats"))),
            None => (object, at("")),
        };
        let response = match formats.get("http-response") {
            None => None,
            Some(format) => {
                let field = format!("{prefix}http-response");
                if let Some(action) = format.get("action") {
                    if action.as_str() != Some("send") {
                        return Err(format!("{field}.action: only \"send\" is supported"));
                    }
                }
                let whole = grip::parse_response(format, &field)?;
                if whole.body.len() > MAX_EVENT {
                    return Err(format!(
                        "{field}: the body is {} bytes, more than the limit of {MAX_EVENT}",
                        whole.body.len()
                    ));
                }
                Some(event_of(whole, &field)?)
            }
        };
        let stream = match formats.get("http-stream") {
            None => None,
            Some(format) => {
                let format = http_stream::parse(format, &format!("{prefix}http-stream"))?;
                Some(StreamItem {
                    id: id.clone(),
                    prev_id,
                    meta,
                    action: format.action,
                    content_filters: format.content_filters,
                    content: format.content,
                })
            }
        };
        let ws = match formats.get("ws-message") {
            None => None,
            Some(format) => Some(ws_message(format, &format!("{prefix}ws-message"))?),
        };
        if response.is_none() && stream.is_none() && ws.is_none() {
            return Err(format!(
                "{}: no http-response, http-stream or ws-message format (nothing was published)",
                at("formats")
            ));
        }
        parsed.items.push(Item {
            channel: channel.to_owned(),
            id,
            response,
            stream,
            ws,
        });
    }
    Ok(parsed)
}

/// A `ws-message` format: `content` (text) or `content-bin` (base64), its
/// `type` (`text`, `binary`, `ping`, `pong`; `text` by default, `binary`
/// for `content-bin`), or `action: close` with an optional `code`.
fn ws_message(format: &Value, field: &str) -> Result<Message, String> {
    let format = format
        .as_object()
        .ok_or_else(|| format!("{field} is not an object"))?;
    if let Some(action) = format.get("action") {
        match action.as_str() {
            Some("send") => {}
            Some("close") => {
                let code = match format.get("code") {
                    None | Some(Value::Null) => 1000,
                    Some(code) => code
                        .as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .ok_or_else(|| format!("{field}.code is not a close code"))?,
                };
                return Ok(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(""),
                })));
            }
            _ => return Err(format!("{field}.action must be \"send\" or \"close\"")),
        }
    }
    let (content, binary) = match (format.get("content"), format.get("content-bin")) {
        (Some(Value::String(text)), None) => (Bytes::from(text.clone().into_bytes()), false),
        (None, Some(Value::String(encoded))) => (
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|err| format!("{field}.content-bin is not base64: {err}"))?,
            true,
        ),
        _ => {
            return Err(format!(
                "{field} needs one of content (a string) or content-bin (base64)"
            ));
        }
    };
    if content.len() > MAX_EVENT {
        return Err(format!("{field}: the content is over {MAX_EVENT} bytes"));
    }
    let kind = format.get("type").and_then(Value::as_str);
    Ok(match kind {
        Some("text") | None if !binary => Message::Text(
            Utf8Bytes::try_from(content).map_err(|_| format!("{field}.content is not UTF-8"))?,
        ),
        Some("text") => Message::Text(
            Utf8Bytes::try_from(content)
                .map_err(|_| format!("{field}.content-bin is not UTF-8 text"))?,
        ),
        Some("binary") | None => Message::Binary(content),
        Some("ping") => Message::Ping(content),
        Some("pong") => Message::Pong(content),
        Some(other) => return Err(format!("{field}.type {other:?} is not a message type")),
    })
}

/// A published `http-response` as an event: its body, its `Content-Type`
/// as the event's content type, its status, reason and other headers
/// carried along.
fn event_of(whole: Whole, field: &str) -> Result<Event, String> {
    let Whole {
        status,
        reason,
        headers: mut kept,
        body,
    } = whole;
    if let Some(reason) = reason {
        let value = HeaderValue::try_from(reason.as_str())
            .ok()
            .filter(|value| ReasonPhrase::try_from(value.as_bytes()).is_ok())
            .ok_or_else(|| format!("{field}.reason is not a valid reason phrase"))?;
        kept.insert(GRIP_REASON, value);
    }
    let content_type = kept.remove(CONTENT_TYPE);
    let mut event = Event::new(body).status(status).headers(kept);
    if let Some(content_type) = content_type {
        event = event.content_type(content_type);
    }
    Ok(event)
}

/// Turns the reason phrase an event carried ([`GRIP_REASON`]) into the
/// response's reason phrase (sent on HTTP/1.1), never a header.
pub fn apply_reason<B>(response: &mut Response<B>) {
    if let Some(reason) = response.headers_mut().remove(GRIP_REASON) {
        if let Ok(reason) = ReasonPhrase::try_from(reason.as_bytes()) {
            response.extensions_mut().insert(reason);
        }
    }
}
