//! `Cursor::from_str` on any text; the promises are checked by
//! `check_cursor_text` in tests/support/parse_checks.rs, which the
//! proptests of tests/fuzz_props.rs share.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/parse_checks.rs"]
mod parse_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        parse_checks::check_cursor_text(text);
    }
});
