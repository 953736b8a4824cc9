//! The gateway's EPCP publish parser (src/bin/longpoll-gateway/items.rs)
//! on any body. The checks are in src/bin/longpoll-gateway/parse_checks.rs,
//! which the proptests share.

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

fuzz_target!(|data: &[u8]| parse_checks::check_publish(data));
