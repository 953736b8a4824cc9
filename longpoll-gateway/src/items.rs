//! The EPCP publish body: `{"items": [...]}`, each item a channel, an
//! optional id and an `http-response` format. Pure parsing, no state: the
//! publish listener, the tests and the fuzz target (`fuzz/`) share it.

use http::header::CONTENT_TYPE;
use serde_json::Value;
use tower_longpoll::Event;

use crate::grip::{self, Whole};

/// The largest event body an item may carry.
pub const MAX_EVENT: usize = 1024 * 1024;

/// The longest channel name, as the hub's id limit.
pub const MAX_CHANNEL: usize = 256;

/// One item, checked, ready to publish.
#[derive(Debug)]
pub struct Item {
    pub channel: String,
    pub id: Option<String>,
    pub event: Event,
}

/// The items of a publish body.
#[derive(Debug, Default)]
pub struct Items {
    /// The items to publish, in order.
    pub items: Vec<Item>,
    /// The channels of the items without an `http-response` format, which
    /// the gateway does not deliver (they are counted, not refused).
    pub ignored: Vec<String>,
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
        ignored: Vec::new(),
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
        optional_string("prev-id")?;
        // EPCP puts formats under `formats`; gripcontrol and older
        // publishers put them on the item itself.
        let (format, field) = match object.get("formats") {
            Some(Value::Object(formats)) => {
                (formats.get("http-response"), at("formats.http-response"))
            }
            Some(_) => return Err(format!("{} is not an object", at("formats"))),
            None => (object.get("http-response"), at("http-response")),
        };
        let Some(format) = format else {
            parsed.ignored.push(channel.to_owned());
            continue;
        };
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
        parsed.items.push(Item {
            channel: channel.to_owned(),
            id,
            event: event_of(whole),
        });
    }
    Ok(parsed)
}

/// A published `http-response` as an event: its body, its `Content-Type`
/// as the event's content type, its status and other headers carried along.
fn event_of(whole: Whole) -> Event {
    let Whole {
        status,
        headers: mut kept,
        body,
        ..
    } = whole;
    let content_type = kept.remove(CONTENT_TYPE);
    let mut event = Event::new(body).status(status).headers(kept);
    if let Some(content_type) = content_type {
        event = event.content_type(content_type);
    }
    event
}
