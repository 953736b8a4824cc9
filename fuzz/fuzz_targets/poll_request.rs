//! A poll from arbitrary bytes through a real `LongPollLayer`: the route
//! match, the client id (path, header, query, cookie, function), the cursor
//! sources (`?since`, `Last-Event-ID`, `If-None-Match`), `?timeout`,
//! `?batch` and the request body. The layer must answer every request with
//! one of its statuses and a well-formed answer, and leave nothing parked.
//!
//! The input format (it reads like a request) and the checks are in
//! tests/support/parse_checks.rs, which the proptests of
//! tests/fuzz_props.rs share.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/parse_checks.rs"]
mod parse_checks;

fuzz_target!(|data: &[u8]| {
    let Some(case) = parse_checks::parse_case(data) else {
        return;
    };
    // A runtime per input: the hub's sweeper task ends with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(parse_checks::run(&case));
});
