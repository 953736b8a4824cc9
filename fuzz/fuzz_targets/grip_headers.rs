//! The gateway's GRIP instruction parser (`grip::parse`, the module of
//! src/bin/longpoll-gateway/grip.rs itself) on an arbitrary upstream
//! response: any `Grip-*` headers and any body, JSON or not. The input
//! format (it reads like a response head) and the checks are in
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
    if let Some((status, headers, body)) = parse_checks::response_of(data) {
        parse_checks::check_grip(status, headers, body);
    }
});
