//! The check of a publisher's bearer token (longpoll-gateway/src/jwt.rs,
//! HS256 JWTs) on any text: the publish API is reachable by anyone who can
//! connect to it, and its first parser is this one. The checks are in
//! longpoll-gateway/src/parse_checks.rs, which the proptests share.

#![no_main]

use libfuzzer_sys::fuzz_target;

use longpoll_gateway::parse_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        parse_checks::check_token(text);
    }
});
