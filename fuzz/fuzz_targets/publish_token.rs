//! The check of a publisher's bearer token (src/bin/longpoll-gateway/jwt.rs,
//! HS256 JWTs) on any text: the publish API is reachable by anyone who can
//! connect to it, and its first parser is this one. The checks are in
//! src/bin/longpoll-gateway/parse_checks.rs, which the proptests share.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The gateway's own modules, as the binary compiles them.
#[allow(dead_code)]
#[path = "../../src/bin/longpoll-gateway/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../src/bin/longpoll-gateway/grip.rs"]
mod grip;
#[allow(dead_code)]
#[path = "../../src/bin/longpoll-gateway/headers.rs"]
mod headers;
#[allow(dead_code)]
#[path = "../../src/bin/longpoll-gateway/items.rs"]
mod items;
#[allow(dead_code)]
#[path = "../../src/bin/longpoll-gateway/jwt.rs"]
mod jwt;
#[allow(dead_code)]
#[path = "../../src/bin/longpoll-gateway/parse_checks.rs"]
mod parse_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        parse_checks::check_token(text);
    }
});
