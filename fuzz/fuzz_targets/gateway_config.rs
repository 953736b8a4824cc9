//! The gateway's settings (longpoll-gateway/src/config.rs): any flags
//! over any TOML file, merged. The input format (flags, `---`, TOML) and
//! the checks are in longpoll-gateway/src/parse_checks.rs, which the
//! proptests share.

#![no_main]

use libfuzzer_sys::fuzz_target;

use longpoll_gateway::parse_checks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((args, toml)) = parse_checks::config_input(text) {
        parse_checks::check_config(args, toml);
    }
});
