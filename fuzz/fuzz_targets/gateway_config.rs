//! The gateway's settings (src/bin/longpoll-gateway/config.rs): any flags
//! over any TOML file, merged. The input format (flags, `---`, TOML) and
//! the checks are in src/bin/longpoll-gateway/parse_checks.rs, which the
//! proptests share.

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
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((args, toml)) = parse_checks::config_input(text) {
        parse_checks::check_config(args, toml);
    }
});
