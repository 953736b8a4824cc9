//! The gateway's GRIP instruction parser (`grip::parse`, the module of
//! longpoll-gateway/src/grip.rs itself) on an arbitrary upstream
//! response: any `Grip-*` headers and any body, JSON or not. The input
//! format (it reads like a response head) and the checks are in
//! longpoll-gateway/src/parse_checks.rs, which the proptests share.

#![no_main]

use libfuzzer_sys::fuzz_target;

use longpoll_gateway::parse_checks;

fuzz_target!(|data: &[u8]| {
    if let Some((status, headers, body)) = parse_checks::response_of(data) {
        parse_checks::check_grip(status, headers, body);
    }
});
