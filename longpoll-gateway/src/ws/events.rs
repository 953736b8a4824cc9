//! `application/websocket-events`: the body of WebSocket-over-HTTP requests
//! and responses, a run of events each written `TYPE[ SIZE]\r\n` then, when
//! it has content, the content (`SIZE` bytes, in hex) and `\r\n`.

use bytes::{Bytes, BytesMut};

/// The media type of the bodies both ways.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// What an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    Open,
    Text,
    Binary,
    Ping,
    Pong,
    /// Content: the close code, 2 bytes big-endian (or none).
    Close,
    /// The connection went away without a close handshake.
    Disconnect,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Open => "OPEN",
            Kind::Text => "TEXT",
            Kind::Binary => "BINARY",
            Kind::Ping => "PING",
            Kind::Pong => "PONG",
            Kind::Close => "CLOSE",
            Kind::Disconnect => "DISCONNECT",
        }
    }

    fn of(name: &[u8]) -> Option<Kind> {
        Some(match name {
            b"OPEN" => Kind::Open,
            b"TEXT" => Kind::Text,
            b"BINARY" => Kind::Binary,
            b"PING" => Kind::Ping,
            b"PONG" => Kind::Pong,
            b"CLOSE" => Kind::Close,
            b"DISCONNECT" => Kind::Disconnect,
            _ => return None,
        })
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub content: Bytes,
}

impl Event {
    pub fn new(kind: Kind, content: impl Into<Bytes>) -> Event {
        Event {
            kind,
            content: content.into(),
        }
    }

    /// A `CLOSE` with its code.
    pub fn close(code: u16) -> Event {
        Event::new(Kind::Close, Bytes::copy_from_slice(&code.to_be_bytes()))
    }

    /// The code of a `CLOSE`, when it has one.
    pub fn close_code(&self) -> Option<u16> {
        match self.content[..] {
            [high, low, ..] => Some(u16::from_be_bytes([high, low])),
            _ => None,
        }
    }
}

/// Appends events in the wire format.
pub fn encode(events: &[Event], out: &mut BytesMut) {
    for event in events {
        out.extend_from_slice(event.kind.name().as_bytes());
        if event.content.is_empty() {
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(format!(" {:x}\r\n", event.content.len()).as_bytes());
            out.extend_from_slice(&event.content);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Reads a body of events; an error says where it is malformed.
pub fn decode(mut body: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    while !body.is_empty() {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("an event line without \\r\\n")?;
        let line = &body[..end];
        body = &body[end + 2..];
        let (name, size) = match line.iter().position(|&b| b == b' ') {
            Some(at) => (&line[..at], Some(&line[at + 1..])),
            None => (line, None),
        };
        let kind = Kind::of(name)
            .ok_or_else(|| format!("unknown event {:?}", String::from_utf8_lossy(name)))?;
        let content = match size {
            None => Bytes::new(),
            Some(size) => {
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| usize::from_str_radix(s, 16).ok())
                    .ok_or("an event size that is not hex")?;
                if body.len() < size + 2 || &body[size..size + 2] != b"\r\n" {
                    return Err(format!("a {} event shorter than its size", kind.name()));
                }
                let content = Bytes::copy_from_slice(&body[..size]);
                body = &body[size + 2..];
                content
            }
        };
        events.push(Event { kind, content });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_both_ways_in_pushpins_framing() {
        let events = vec![
            Event::new(Kind::Open, Bytes::new()),
            Event::new(Kind::Text, "hello"),
            Event::new(Kind::Binary, vec![0u8, 1, 255, b'\r', b'\n']),
            Event::close(1000),
            Event::new(Kind::Disconnect, Bytes::new()),
        ];
        let mut out = BytesMut::new();
        encode(&events, &mut out);
        assert_eq!(
            &out[..],
            b"OPEN\r\nTEXT 5\r\nhello\r\nBINARY 5\r\n\x00\x01\xff\r\n\r\nCLOSE 2\r\n\x03\xe8\r\nDISCONNECT\r\n"
        );
        assert_eq!(decode(&out).unwrap(), events);
        assert_eq!(decode(&out).unwrap()[3].close_code(), Some(1000));
        // A larger size is written in hex, as Pushpin writes it.
        let long = Event::new(Kind::Text, vec![b'x'; 26]);
        let mut out = BytesMut::new();
        encode(std::slice::from_ref(&long), &mut out);
        assert!(out.starts_with(b"TEXT 1a\r\n"));
        assert!(decode(b"").unwrap().is_empty());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(decode(b"OPEN").is_err());
        assert!(decode(b"NOPE\r\n").is_err());
        assert!(decode(b"TEXT 9\r\nshort\r\n").is_err());
        assert!(decode(b"TEXT zz\r\nab\r\n").is_err());
    }
}
