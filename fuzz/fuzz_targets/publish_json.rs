//! The gateway's EPCP publish parser (longpoll-gateway/src/items.rs)
//! on any body. The checks are in longpoll-gateway/src/parse_checks.rs,
//! which the proptests share.

#![no_main]

use libfuzzer_sys::fuzz_target;

use longpoll_gateway::parse_checks;

fuzz_target!(|data: &[u8]| parse_checks::check_publish(data));
