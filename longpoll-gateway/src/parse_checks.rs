//! What the gateway's parsers promise whatever the input, in one place for
//! the fuzz targets (`fuzz/fuzz_targets/{grip_headers,publish_json,
//! publish_token,gateway_config}.rs`, which include this file) and the proptests below,
//! which run in the normal suite. Each check panics when a promise is
//! broken. The input formats are those of the files in `fuzz/corpus/`.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tower_longpoll::Hub;

use crate::config::{Args, Config};
use crate::grip::{self, Instruction, MAX_CHANNELS, Whole};
use crate::http_stream::{self, KeptItem};
use crate::items;
use crate::jwt::{self, JwtError};
use crate::stream::filter::MAX_FILTERS;
use crate::stream::instruct::MAX_KEEP_ALIVE;

/// An upstream response from the text of a `fuzz/corpus/grip_headers`
/// file, which reads like a response head; `None` when the `http` crate
/// refuses a part (an upstream cannot send it):
///
/// ```text
/// <status>\n
/// <header name>: <value>\n ...
/// \n
/// <body>
/// ```
pub fn response_of(data: &[u8]) -> Option<(StatusCode, HeaderMap, Bytes)> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let status = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
    let status = StatusCode::from_u16(status).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let at = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..at], &line[at + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        headers.append(
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some((status, headers, Bytes::copy_from_slice(body)))
}

/// `grip::parse` on any response: a hold names 1 to 20 channels, none
/// empty, and lasts within the gateway's bounds; what a client may be sent
/// is a final status without `Grip-*`, hop-by-hop or framing headers; a
/// refusal says why.
pub fn check_grip(status: StatusCode, headers: HeaderMap, body: Bytes) {
    let by_headers = headers.contains_key(grip::GRIP_HOLD);
    let _ = grip::is_instruction(&headers);
    match grip::parse(status, headers, body.clone()) {
        Ok(Instruction::Hold(hold)) => {
            assert!(
                (1..=MAX_CHANNELS).contains(&hold.channels.len()),
                "{hold:?}"
            );
            assert!(hold.channels.iter().all(|c| !c.name.is_empty()), "{hold:?}");
            for (min, max) in [(5, 300), (0, 0), (0, u64::MAX), (7, 7)] {
                let (min, max) = (Duration::from_secs(min), Duration::from_secs(max));
                let lasts = hold.lasts(Duration::from_secs(55).clamp(min, max), min, max);
                assert!(min <= lasts && lasts <= max, "{hold:?} lasts {lasts:?}");
            }
            if by_headers {
                assert_eq!(hold.response.body, body, "the held response's body");
            }
            check_whole(&hold.response, status);
        }
        Ok(Instruction::Respond(whole)) => {
            assert!(!by_headers, "Grip-Hold was given");
            check_whole(&whole, status);
        }
        Ok(Instruction::Stream(stream)) => {
            assert!(stream.channels.len() <= MAX_CHANNELS, "{stream:?}");
            assert!(stream.held || stream.next.is_some(), "{stream:?}");
            assert!(stream.held || stream.channels.is_empty(), "{stream:?}");
            for channel in &stream.channels {
                assert!(!channel.name.is_empty(), "{stream:?}");
                assert!(channel.filters.len() <= MAX_FILTERS, "{stream:?}");
            }
            if let Some(keep_alive) = &stream.keep_alive {
                assert!(keep_alive.every >= Duration::from_secs(1), "{stream:?}");
                assert!(keep_alive.data.len() <= MAX_KEEP_ALIVE, "{stream:?}");
            }
            check_whole(&stream.response, status);
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// What a client may be sent from a kept response: the upstream's own
/// status (passed on as for any proxied response) or one that an
/// instruction set, which must be a final HTTP status.
fn check_whole(whole: &Whole, upstream: StatusCode) {
    assert!(
        whole.status == upstream || (200..=599).contains(&whole.status.as_u16()),
        "a response a client cannot be sent: {whole:?}"
    );
    for name in whole.headers.keys() {
        let name = name.as_str();
        assert!(!name.starts_with("grip-"), "{name} kept in {whole:?}");
        assert!(
            ![
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "te",
                "trailer",
                "upgrade",
                "content-length",
            ]
            .contains(&name),
            "{name} kept in {whole:?}"
        );
    }
}

/// `items::parse` on any publish body: every listed item is published
/// (each with a format the gateway serves); channels are ids the hub takes;
/// bodies are within the limit; a refusal of a body with an `items` list
/// names the item, and the field when the item is an object.
pub fn check_publish(body: &[u8]) {
    let list = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| Some(value.get("items")?.as_array()?.clone()));
    let listed = list.as_ref().map(Vec::len);
    match items::parse(body) {
        Ok(parsed) => {
            assert_eq!(Some(parsed.items.len()), listed);
            for item in &parsed.items {
                let channel = &item.channel;
                assert!(!channel.is_empty() && channel.len() <= items::MAX_CHANNEL);
                assert!(!channel.chars().any(char::is_control), "{channel:?}");
                assert!(
                    item.response.is_some() || item.stream.is_some() || item.ws.is_some(),
                    "{item:?}"
                );
                if let Some(event) = &item.response {
                    assert!(event.data().len() <= items::MAX_EVENT);
                    if let Some(status) = event.status_value() {
                        assert!(
                            (200..=599).contains(&status.as_u16()),
                            "an event a client cannot be sent: {item:?}"
                        );
                    }
                }
                if let Some(stream) = &item.stream {
                    assert!(stream.content.len() <= http_stream::MAX_CONTENT);
                    let event = stream.to_event();
                    let kept = KeptItem::decode(&event).expect("a kept item reads back");
                    assert_eq!(kept.content, stream.content);
                    assert_eq!(kept.id, stream.id.as_deref());
                }
            }
        }
        Err(message) => match listed {
            Some(len) => {
                let (index, rest) = message
                    .strip_prefix("items[")
                    .and_then(|rest| rest.split_once(']'))
                    .and_then(|(index, rest)| Some((index.parse::<usize>().ok()?, rest)))
                    .unwrap_or_else(|| panic!("{message:?} does not name the item"));
                assert!(index < len, "{message:?} names an item of {len}");
                let items = list.as_deref().unwrap_or_default();
                if items[index].is_object() {
                    let field = rest.strip_prefix('.').unwrap_or_default();
                    assert!(
                        field.starts_with(|c: char| c.is_ascii_lowercase()),
                        "{message:?} does not name the field"
                    );
                }
            }
            None => assert!(!message.is_empty()),
        },
    }
}

/// The key publishers' tokens are checked with here.
const TOKEN_KEY: &[u8] = b"the publish key";
/// The time tokens are checked at here.
const TOKEN_NOW: u64 = 1_700_000_000;

/// `jwt::verify`, the check of a publisher's bearer token, on any text:
/// only a token signed with the key and not expired gets through. And any
/// JSON object, signed as claims: accepted exactly when its `exp` is a
/// number after now, and refused with any other key.
pub fn check_token(text: &str) {
    let exp_of = |claims: &serde_json::Map<String, serde_json::Value>| {
        claims.get("exp").and_then(serde_json::Value::as_f64)
    };
    if let Ok(claims) = jwt::verify(text, TOKEN_KEY, TOKEN_NOW) {
        let exp = exp_of(&claims).expect("an accepted token has an exp");
        assert!(exp > TOKEN_NOW as f64, "{text:?} accepted with exp {exp}");
    }
    if let Ok(claims) = serde_json::from_str::<serde_json::Map<_, _>>(text) {
        let token = jwt::sign(&claims, TOKEN_KEY);
        let expected = match exp_of(&claims) {
            None => Err(JwtError::NoExpiry),
            Some(exp) if exp <= TOKEN_NOW as f64 => Err(JwtError::Expired),
            Some(_) => Ok(()),
        };
        // The claims come back with their keys; a float among them may
        // differ in its last bit (serde_json parses without
        // `float_roundtrip`).
        let verified = jwt::verify(&token, TOKEN_KEY, TOKEN_NOW).map(|verified| {
            assert!(
                verified.keys().eq(claims.keys()),
                "{verified:?} from {claims:?}"
            );
        });
        assert_eq!(verified, expected, "{text:?}");
        assert_eq!(
            jwt::verify(&token, b"another key", TOKEN_NOW),
            Err(JwtError::Signature)
        );
    }
}

/// Flags and TOML from the text of a `fuzz/corpus/gateway_config` file:
/// the flags one per line, a line `---`, the TOML (all TOML without `---`).
/// `None` when clap refuses the flags.
pub fn config_input(text: &str) -> Option<(Args, &str)> {
    let (flags, toml) = text.split_once("\n---\n").unwrap_or(("", text));
    let argv = std::iter::once("longpoll-gateway").chain(flags.lines());
    Some((Args::try_parse_from(argv).ok()?, toml))
}

/// Flags over a TOML file: a configuration the gateway starts with (its
/// poll layer builds, its timeouts are ordered) or a message; never a panic.
pub fn check_config(args: Args, toml: &str) {
    match Config::from_toml(args, "gateway.toml", toml) {
        Ok(config) => {
            assert!(config.grip_timeout_min <= config.grip_timeout, "{config:?}");
            assert!(config.grip_timeout <= config.grip_timeout_max, "{config:?}");
            match &config.upstream {
                Some(upstream) => {
                    assert!(matches!(upstream.scheme_str(), Some("http" | "https")));
                    assert!(upstream.authority().is_some());
                    assert!(config.routes_file.is_none());
                }
                None => assert!(config.routes_file.is_some()),
            }
            let layer = config.poll_layer(Hub::new());
            assert_eq!(layer.is_some(), !config.routes.is_empty());
            assert!(config.stream_buffer >= 1, "{config:?}");
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// A routes file (`crate::routes`): any text is a table or errors that
/// each name the file and a line; a table's routes have targets with ports,
/// rewrite any path to one starting with `/`, and are found without a panic.
pub fn check_routes(text: &str) {
    use crate::routes::{Proto, Table};
    match Table::parse("f", std::path::Path::new("."), text) {
        Ok((table, _)) => {
            for route in &table.all {
                assert!(!route.targets.is_empty());
                for target in &route.targets {
                    assert!(target.port > 0);
                    let _ = target.url("/");
                }
                for path in ["/", "/x/y?z", "", "?q", "/é/ü"] {
                    assert!(route.rewrite(path).starts_with('/'), "{route:?} {path:?}");
                }
            }
            for (proto, ssl) in [(Proto::Http, false), (Proto::Ws, true)] {
                let _ = table.find("a.test", proto, ssl, "/x");
            }
        }
        Err(err) => {
            for line in err.0.lines() {
                assert!(line.starts_with("f:"), "{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::{Map, Value, json};

    use super::*;

    /// The files of one fuzz target's seed corpus (regressions included).
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        // The fuzz crate is at the workspace's root, beside this crate.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        files
    }

    #[test]
    fn grip_seeds_keep_their_promises() {
        for (name, data) in seeds("grip_headers") {
            let (status, headers, body) = response_of(&data).unwrap_or_else(|| panic!("{name}"));
            check_grip(status, headers, body);
        }
    }

    #[test]
    fn publish_seeds_keep_their_promises() {
        for (_, data) in seeds("publish_json") {
            check_publish(&data);
        }
    }

    #[test]
    fn routes_seeds_keep_their_promises() {
        for (_, data) in seeds("routes_file") {
            check_routes(&String::from_utf8_lossy(&data));
        }
    }

    proptest! {
        #[test]
        fn routes_files_keep_their_promises(
            lines in proptest::collection::vec(r#"[ *a-z0-9=,:/\[\]"\\#é_.?-]{0,48}"#, 0..6)
        ) {
            check_routes(&lines.join("\n"));
        }
    }

    #[test]
    fn token_seeds_keep_their_promises() {
        for (_, data) in seeds("publish_token") {
            if let Ok(text) = std::str::from_utf8(&data) {
                check_token(text);
            }
        }
    }

    #[test]
    fn config_seeds_keep_their_promises() {
        for (name, data) in seeds("gateway_config") {
            let text = String::from_utf8(data).unwrap();
            let (args, toml) = config_input(&text).unwrap_or_else(|| panic!("{name}"));
            check_config(args, toml);
        }
    }

    /// Any JSON, its object keys those the parsers look for.
    fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0u64..1000).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            select(&["response", "stream", "send", "hold", "aGk=", "!!", ""][..])
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(select(keys), inner, 0..6).prop_map(object),
            ]
        })
    }

    fn object(map: BTreeMap<&str, Value>) -> Value {
        Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// An object of the fields given (`None` left out).
    fn fields(list: Vec<(&str, Option<Value>)>) -> Value {
        let mut map = Map::new();
        for (key, value) in list {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
        Value::Object(map)
    }

    const KEYS: &[&str] = &[
        "hold",
        "mode",
        "channels",
        "name",
        "prev-id",
        "timeout",
        "response",
        "code",
        "reason",
        "headers",
        "body",
        "body-bin",
        "items",
        "channel",
        "id",
        "formats",
        "http-response",
        "http-stream",
        "content",
        "content-bin",
        "ws-message",
        "meta",
        "keep-alive",
        "filters",
        "action",
        "Content-Type",
        "Grip-Hold",
        "connection",
        "x-a",
    ];

    fn status_code() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (0u64..1100).prop_map(Value::from),
            1 => select(vec![json!(-1), json!(2.5e2), json!("200"), json!(65736)]),
        ]
    }

    fn header_list() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            4 => select(
                &[
                    "Content-Type",
                    "content-length",
                    "Connection",
                    "Grip-Sig",
                    "x-a",
                    "Keep-Alive",
                    "transfer-encoding",
                ][..],
            ),
            1 => select(&["bad name", "", "\u{e9}"][..]),
        ];
        let value = prop_oneof![
            4 => "[ -~]{0,12}".prop_map(Value::from),
            2 => Just(json!("close, x-a")),
            1 => select(vec![json!("a\r\nb"), json!(7), json!(null)]),
        ];
        prop_oneof![
            4 => btree_map(name.clone(), value.clone(), 0..5).prop_map(object),
            4 => vec((name, value), 0..5).prop_map(|pairs| {
                Value::Array(pairs.into_iter().map(|(n, v)| json!([n, v])).collect())
            }),
            1 => json(KEYS),
        ]
    }

    /// Mostly `valid`, sometimes any JSON.
    fn or_junk<S>(valid: S) -> impl Strategy<Value = Value>
    where
        S: Strategy<Value = Value> + 'static,
    {
        prop_oneof![6 => valid, 1 => json(KEYS)]
    }

    /// An `http-response` object, near valid.
    fn http_response() -> impl Strategy<Value = Value> {
        let body = prop_oneof![
            (
                option::weighted(0.6, or_junk("\\PC{0,20}".prop_map(Value::from))),
                Just(None)
            ),
            (
                Just(None),
                option::weighted(
                    0.6,
                    or_junk("([A-Za-z0-9+/]{4}){0,4}".prop_map(Value::from))
                )
            ),
            (
                option::of(Just(json!("a"))),
                option::of(Just(json!("YQ==")))
            ),
        ];
        (
            option::weighted(0.7, status_code()),
            option::of(or_junk("[ -~]{0,10}".prop_map(Value::from))),
            option::weighted(0.7, header_list()),
            body,
            option::weighted(
                0.2,
                select(&["send", "hint", "close"][..]).prop_map(Value::from),
            ),
        )
            .prop_map(|(code, reason, headers, (body, body_bin), action)| {
                fields(vec![
                    ("code", code),
                    ("reason", reason),
                    ("headers", headers),
                    ("body", body),
                    ("body-bin", body_bin),
                    ("action", action),
                ])
            })
    }

    fn channel_name() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => "[a-z0-9:/._-]{1,12}".prop_map(Value::from),
            1 => select(vec![
                json!(""),
                json!("a\u{0}b"),
                json!("\u{e9}\u{85}"),
                Value::from("c".repeat(257)),
                Value::from("c".repeat(256)),
            ]),
            1 => json(KEYS),
        ]
    }

    /// An `application/grip-instruct` body, near valid.
    fn instruction() -> impl Strategy<Value = Value> {
        let channel = || {
            (
                channel_name(),
                option::of(or_junk("[a-z0-9]{0,4}".prop_map(Value::from))),
            )
                .prop_map(|(name, prev)| fields(vec![("name", Some(name)), ("prev-id", prev)]))
        };
        let hold = (
            option::weighted(
                0.9,
                prop_oneof![
                    6 => Just(json!("response")),
                    1 => Just(json!("stream")),
                    1 => json(KEYS),
                ],
            ),
            option::weighted(
                0.9,
                or_junk(
                    prop_oneof![
                        6 => vec(channel(), 1..4),
                        1 => vec(channel(), 0..24),
                    ]
                    .prop_map(Value::Array),
                ),
            ),
            option::of(or_junk(prop_oneof![
                any::<u64>().prop_map(Value::from),
                (0u64..400).prop_map(Value::from),
                select(vec![json!(-5), json!(1.5)]),
            ])),
        )
            .prop_map(|(mode, channels, timeout)| {
                fields(vec![
                    ("mode", mode),
                    ("channels", channels),
                    ("timeout", timeout),
                ])
            });
        (
            option::weighted(0.7, or_junk(hold)),
            option::weighted(0.7, http_response()),
        )
            .prop_map(|(hold, response)| fields(vec![("hold", hold), ("response", response)]))
    }

    /// `Grip-*` and other headers, near valid: mostly a hold on a few
    /// channels with some of the other `Grip-*` headers, then any headers.
    fn grip_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let text = |regex: &'static str| regex.prop_map(String::into_bytes);
        let raw = vec(any::<u8>(), 0..12);
        let grip = (
            option::weighted(
                0.8,
                prop_oneof![
                    6 => select(&["response", " response "][..]).prop_map(|v| v.as_bytes().to_vec()),
                    1 => text("stream|[a-z ]{0,8}"),
                ],
            ),
            vec(
                prop_oneof![
                    8 => text("[a-z]{1,6}(; ?(prev-id|filter)=\"?[a-z0-9,]{0,6}\"?)?(, ?[a-z]{1,6}){0,3}"),
                    1 => text("([a-z;]{0,3}, ?){0,24}"),
                    1 => raw.clone(),
                ],
                0..3,
            ),
            option::of(prop_oneof![text("[0-9]{1,22}"), text(" ?-?[0-9.]{0,4} ?")]),
            option::of(prop_oneof![
                text("[0-9]{3}( [A-Za-z ]{0,10})?"),
                text("-?[0-9]{0,5} ?[ -~]{0,6}"),
            ]),
            option::of(text("(<[ -~]{0,10}>; ?rel=\"?(gone|next)\"?,? ?){1,3}")),
        )
            .prop_map(|(hold, channels, timeout, status, link)| {
                let mut list = Vec::new();
                let mut add = |name: &str, value: Option<Vec<u8>>| {
                    if let Some(value) = value {
                        list.push((name.to_owned(), value));
                    }
                };
                add("grip-hold", hold);
                for channel in channels {
                    add("grip-channel", Some(channel));
                }
                add("grip-timeout", timeout);
                add("grip-status", status);
                add("grip-link", link);
                list
            });
        let name = prop_oneof![
            select(
                &[
                    "grip-hold",
                    "grip-channel",
                    "grip-sig",
                    "grip-set-meta",
                    "content-type",
                    "content-length",
                    "connection",
                    "transfer-encoding",
                    "x-kept",
                ][..]
            )
            .prop_map(str::to_owned),
            "[a-z-]{1,12}",
        ];
        let value = prop_oneof![
            4 => text("close, x-kept, grip-hold|application/grip-instruct|[ -~]{0,30}"),
            1 => raw,
        ];
        (grip, vec((name, value), 0..4)).prop_map(|(mut grip, extra)| {
            grip.extend(extra);
            grip
        })
    }

    fn headers_of(list: Vec<(String, Vec<u8>)>) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        for (name, value) in list {
            headers.append(
                HeaderName::try_from(name).ok()?,
                HeaderValue::from_bytes(&value).ok()?,
            );
        }
        Some(headers)
    }

    /// An `http-stream` object, near valid.
    fn http_stream() -> BoxedStrategy<Value> {
        (
            prop_oneof![
                4 => (option::of(or_junk("\\PC{0,20}".prop_map(Value::from))), Just(None)),
                1 => (Just(None), option::of(or_junk("([A-Za-z0-9+/]{4}){0,4}".prop_map(Value::from)))),
            ],
            option::weighted(0.3, select(&["send", "close", "hint", "refresh"][..]).prop_map(Value::from)),
            option::weighted(0.2, or_junk(Just(json!(["build-id"])))),
        )
            .prop_map(|((content, content_bin), action, filters)| {
                fields(vec![
                    ("content", content),
                    ("content-bin", content_bin),
                    ("action", action),
                    ("content-filters", filters),
                ])
            })
            .boxed()
    }

    /// A publish body, near valid.
    fn publish_body() -> impl Strategy<Value = Value> {
        let format = prop_oneof![
            4 => http_response().prop_map(|f| json!({ "http-response": f })),
            2 => http_stream().prop_map(|f| json!({ "http-stream": f })),
            1 => (http_response(), http_stream())
                .prop_map(|(r, s)| json!({ "http-response": r, "http-stream": s, "ws-message": {} })),
            1 => Just(json!({ "ws-message": {"content": "x"} })),
            1 => json(KEYS),
        ]
        // Boxed: the nested strategy types overflow a test thread's stack.
        .boxed();
        let item = (
            option::weighted(0.95, channel_name()),
            option::of(or_junk("[a-z0-9]{0,6}".prop_map(Value::from))),
            option::weighted(0.2, or_junk("[a-z0-9]{0,6}".prop_map(Value::from))),
            prop_oneof![
                4 => format.clone().prop_map(|f| Some((true, f))),
                2 => format.prop_map(|f| Some((false, f))),
                1 => Just(None),
            ],
            option::weighted(0.2, or_junk(Just(json!({"skip_users": "a,b"})))),
        )
            .prop_map(|(channel, id, prev_id, formats, meta)| {
                let mut item = fields(vec![
                    ("channel", channel),
                    ("id", id),
                    ("prev-id", prev_id),
                    ("meta", meta),
                ]);
                if let (Some((nested, formats)), Value::Object(map)) = (formats, &mut item) {
                    match (nested, formats) {
                        (true, formats) => {
                            map.insert("formats".to_owned(), formats);
                        }
                        // On the item itself, as gripcontrol puts them.
                        (false, Value::Object(formats)) => map.extend(formats),
                        (false, other) => {
                            map.insert("formats".to_owned(), other);
                        }
                    }
                }
                item
            });
        prop_oneof![
            6 => vec(prop_oneof![8 => item, 1 => json(KEYS)], 0..4)
                .prop_map(|items| json!({ "items": items })),
            1 => json(KEYS),
        ]
    }

    /// TOML values for the config keys, near valid.
    fn toml_value() -> impl Strategy<Value = String> {
        prop_oneof![
            select(
                &[
                    "\"http://127.0.0.1:1\"",
                    "\"http://x/prefix\"",
                    "\"https://x\"",
                    "\"http://x?q\"",
                    "\"x\"",
                    "\"\"",
                    "\"127.0.0.1:0\"",
                    "\"[::1]:80\"",
                    "\"base64:c2VjcmV0\"",
                    "\"base64:!!\"",
                    "\"base64:\"",
                    "[\"/poll/{client}\"]",
                    "[\"/a/{id}\", \"/b/{id}\"]",
                    "[\"/a/{id}\", \"/b/{client}\"]",
                    "[\"/a/{id}/{x}\"]",
                    "[\"poll/{id}\", \"/p-{id}\"]",
                    "[]",
                    "true",
                    "-1",
                    "-0.5",
                    "1e300",
                    "nan",
                    "inf",
                    "18446744073709551615",
                    "18446744073709551616",
                    "{ a = 1 }",
                ][..]
            )
            .prop_map(str::to_owned),
            (0u64..400).prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|x| format!("{x:?}")),
            "\"[ -~&&[^\"\\\\]]{0,12}\"",
        ]
    }

    const CONFIG_KEYS: &[&str] = &[
        "listen",
        "upstream",
        "publish-listen",
        "publish-token",
        "publish-key",
        "sig-key",
        "sig-iss",
        "route",
        "timeout",
        "max-waiters",
        "max-per-id",
        "grip-timeout",
        "grip-timeout-min",
        "grip-timeout-max",
        "upstream-timeout",
        "connect-timeout",
        "shutdown-grace",
        "tls-cert",
        "tls-key",
        "redis",
        "redis-prefix",
        "max-streams",
        "max-streams-per-channel",
        "stream-buffer",
        "nonsense",
    ];

    fn config_text() -> impl Strategy<Value = String> {
        let toml = (
            option::weighted(
                0.8,
                select(&["\"http://127.0.0.1:1\"", "\"http://x/prefix\""][..]),
            ),
            option::weighted(
                0.6,
                select(
                    &[
                        "[\"/poll/{client}\"]",
                        "[\"/a/{id}\", \"/b/{id}\"]",
                        "[\"/a/{id}\", \"/b/{client}\"]",
                        "[\"/a/{x}/b\", \"/{x}\", \"/c/{y}\"]",
                    ][..],
                ),
            ),
            btree_map(select(CONFIG_KEYS), toml_value(), 0..3),
        )
            .prop_map(|(upstream, route, mut map)| {
                if let Some(upstream) = upstream {
                    map.entry("upstream").or_insert_with(|| upstream.to_owned());
                }
                if let Some(route) = route {
                    map.entry("route").or_insert_with(|| route.to_owned());
                }
                map.into_iter()
                    .map(|(key, value)| format!("{key} = {value}\n"))
                    .collect::<String>()
            });
        let flag = (
            select(
                &[
                    "--upstream",
                    "--route",
                    "--timeout",
                    "--grip-timeout",
                    "--grip-timeout-min",
                    "--grip-timeout-max",
                    "--tls-cert",
                    "--sig-key",
                    "--max-per-id",
                ][..],
            ),
            select(
                &[
                    "http://127.0.0.1:2",
                    "/poll/{client}",
                    "/b/{id}",
                    "0",
                    "7",
                    "400",
                    "-1",
                    "2.5",
                    "base64:YQ==",
                    "",
                ][..],
            ),
        )
            .prop_map(|(flag, value)| format!("{flag}={value}\n"));
        prop_oneof![
            6 => (vec(flag, 0..3), toml)
                .prop_map(|(flags, toml)| format!("{}---\n{toml}", flags.concat())),
            1 => "\\PC{0,80}",
        ]
    }

    proptest! {
        #[test]
        fn grip_instructions_in_headers_keep_their_promises(
            status in select(&[200u16, 202, 404, 101, 999][..]),
            list in grip_headers(),
            body in prop_oneof![vec(any::<u8>(), 0..24), instruction().prop_map(|v| v.to_string().into_bytes())],
        ) {
            if let Some(headers) = headers_of(list) {
                check_grip(StatusCode::from_u16(status).unwrap(), headers, Bytes::from(body));
            }
        }

        #[test]
        fn grip_instructions_in_json_keep_their_promises(body in instruction(), any_json in json(KEYS)) {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grip-instruct"));
            for body in [body, any_json] {
                check_grip(StatusCode::OK, headers.clone(), Bytes::from(body.to_string()));
            }
        }

        #[test]
        fn publish_bodies_keep_their_promises(body in publish_body(), raw in vec(any::<u8>(), 0..64)) {
            check_publish(body.to_string().as_bytes());
            check_publish(&raw);
        }

        #[test]
        fn tokens_keep_their_promises(
            text in "\\PC{0,60}",
            parts in vec(prop_oneof!["[A-Za-z0-9_-]{0,40}", "\\PC{0,8}"], 0..5),
            claims in json(&["exp", "iss", "sub", "aud"]),
            exp in prop_oneof![
                (TOKEN_NOW - 5..TOKEN_NOW + 5).prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                Just(json!("9999999999")),
            ],
        ) {
            check_token(&text);
            check_token(&parts.join("."));
            check_token(&claims.to_string());
            check_token(&json!({ "exp": exp, "iss": "publisher" }).to_string());
        }

        #[test]
        fn settings_keep_their_promises(text in config_text()) {
            if let Some((args, toml)) = config_input(&text) {
                check_config(args, toml);
            }
        }
    }
}
