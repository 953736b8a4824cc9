//! Pushpin's routes file as the gateway reads it
//! (longpoll-gateway/src/routes/): any text. The checks are in
//! longpoll-gateway/src/parse_checks.rs, which the proptests share.

#![no_main]

use libfuzzer_sys::fuzz_target;

use longpoll_gateway::parse_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        parse_checks::check_routes(text);
    }
});
