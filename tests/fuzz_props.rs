//! The library's fuzz targets (`fuzz/fuzz_targets/{cursor,poll_request}.rs`)
//! as proptests, so that the suite holds their promises too: the same checks
//! (tests/support/parse_checks.rs) on arbitrary and near-valid input, and
//! every file of their seed corpus (regressions included) replayed.
//! The gateway's parsers have theirs in longpoll-gateway/src/parse_checks.rs.

#[path = "support/parse_checks.rs"]
mod parse_checks;

use std::path::Path;

use http::StatusCode;
use parse_checks::{Answer, PollCase, SETUPS, check_cursor_text, parse_case};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Runs one case on a runtime of its own (the hub's sweeper ends with it).
fn run(case: &PollCase) -> Option<Answer> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(parse_checks::run(case))
}

/// The files of one fuzz target's seed corpus.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

#[test]
fn cursor_seeds_keep_their_promises() {
    for (_, data) in seeds("cursor") {
        if let Ok(text) = std::str::from_utf8(&data) {
            check_cursor_text(text);
        }
    }
}

/// Each seed is answered as its name says: the harness reaches every part
/// of the request path it means to, not only the first refusal.
#[test]
fn poll_seeds_are_answered_as_their_names_say() {
    let expected: &[(&str, u16, Option<&str>)] = &[
        ("cookie_id", 200, Some("one")),
        ("encoded_id_bad_timeout", 400, None),
        ("foreign_cursor", 200, Some("only")),
        ("head_batch_from_start", 200, Some("")),
        ("header_id", 200, Some("one")),
        ("headers_and_large_body", 413, None),
        ("not_a_poll", 200, Some("inner")),
        ("path_id_first_event", 200, Some("one")),
        ("post_with_body", 405, None),
        ("predicate_route", 200, Some("only")),
        ("query_id_duplicate", 400, None),
        ("several_params", 200, Some("")),
        ("shut_down", 503, None),
    ];
    let seeds = seeds("poll_request");
    for (name, status, body) in expected {
        let (_, data) = seeds
            .iter()
            .find(|(file, _)| file == name)
            .unwrap_or_else(|| panic!("no seed {name}"));
        let case = parse_case(data).unwrap_or_else(|| panic!("{name} is not a case"));
        let answer = run(&case).unwrap_or_else(|| panic!("{name} is not a request"));
        assert_eq!(answer.status.as_u16(), *status, "{name}: {answer:?}");
        assert_eq!(answer.passed_through, *name == "not_a_poll", "{name}");
        if let Some(body) = body {
            assert_eq!(answer.body, body.as_bytes(), "{name}");
        }
    }
    // Every other seed (the fuzzers' finds) keeps the promises.
    for (name, data) in &seeds {
        if let Some(case) = parse_case(data) {
            run(&case);
        } else {
            assert!(
                expected.iter().all(|(known, ..)| known != name),
                "{name} is not a case"
            );
        }
    }
}

/// Texts near a cursor: the right shape give or take a character.
fn near_cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F]{15,17}-0{0,2}[0-9]{0,21}",
        "[0-9a-f]{16}-[0-9]{1,20}[ -~]?",
        "[ -~]?[0-9a-f]{16}[-+][0-9]{1,3}",
        "(ffffffffffffffff|0000000000000000)-(1844674407370955161[0-9]|0|00)",
    ]
}

/// A path segment: plain, percent-encoded, anything, or too long.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ab]",
        2 => "(%[0-9A-Fa-f]{2}|[a-z+ ~]){0,6}".prop_map(|s| s.replace(' ', "%20")),
        1 => "\\PC{0,8}",
        1 => "x{250,260}",
        1 => "(%41){85,87}",
    ]
}

fn cursor_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just(String::new()),
        "[0-9a-f]{16}-[0-9]{1,3}",
        near_cursor(),
        "%[0-9A-F]{2}|[ -~]{0,6}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        3 => cursor_value().prop_map(|v| format!("since={v}")),
        3 => prop_oneof![
            Just("0".to_owned()),
            Just("0.5".to_owned()),
            "[0-9.]{0,12}",
            "-1|1e3|\\+1|%30|NaN",
        ]
        .prop_map(|v| format!("timeout={v}")),
        2 => "[0-9]{0,7}|x|-1".prop_map(|v| format!("batch={v}")),
        2 => segment().prop_map(|v| format!("client={v}")),
        1 => "[a-z=&%+]{0,8}",
    ];
    vec(param, 0..4).prop_map(|params| params.join("&"))
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => segment().prop_map(|s| format!("/poll/{s}")),
        2 => (segment(), segment()).prop_map(|(t, u)| format!("/t/{t}/u/{u}/events")),
        2 => Just("/events".to_owned()),
        2 => "/ext[ -~]{0,6}",
        1 => segment().prop_map(|s| format!("/poll/{s}/x")),
        1 => "\\PC{0,20}",
        1 => "https?://[a-z]{1,4}(:[0-9]{1,5})?/poll/[ab]",
    ]
}

fn poll_case() -> impl Strategy<Value = PollCase> {
    let bytes = |s: String| s.into_bytes();
    let headers = (
        option::of(cursor_value().prop_map(bytes)),
        option::of(
            prop_oneof![
                cursor_value().prop_map(|c| format!("\"{c}\"")),
                cursor_value().prop_map(|c| format!("W/\"{c}\"")),
                "\\*|\"[0-9a-f]{16}-1\", \"[0-9a-f]{16}-2\"",
                cursor_value(),
            ]
            .prop_map(bytes),
        ),
        option::of(
            prop_oneof![
                segment().prop_map(|s| format!("theme=dark; sid={s}")),
                segment().prop_map(|s| format!("sid=\"{s}\"")),
                "[ -~]{0,12}",
            ]
            .prop_map(bytes),
        ),
        option::of(prop_oneof![segment(), "[ -~]{0,6}"].prop_map(bytes)),
    );
    (
        0..SETUPS,
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => 2u8..7],
        path(),
        option::of(query()),
        headers,
        prop_oneof![3 => Just(Vec::new()), 1 => vec(any::<u8>(), 0..24)],
    )
        .prop_map(
            |(setup, method, path, query, (last_event_id, if_none_match, cookie, client), body)| {
                PollCase {
                    setup,
                    method,
                    path: path.into_bytes(),
                    query: query.map(String::into_bytes),
                    last_event_id,
                    if_none_match,
                    cookie,
                    client,
                    body,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_text_as_a_cursor(text in "\\PC{0,48}") {
        check_cursor_text(&text);
    }

    #[test]
    fn texts_near_a_cursor(text in near_cursor()) {
        check_cursor_text(&text);
    }

    #[test]
    fn any_poll_is_answered_well(case in poll_case()) {
        run(&case);
    }

    #[test]
    fn any_bytes_as_a_poll(data in vec(any::<u8>(), 0..64)) {
        if let Some(case) = parse_case(&data) {
            run(&case);
        }
    }
}

/// The near-valid polls reach past the refusals: a test of the strategy,
/// so that the proptest above cannot pass by refusing everything.
#[test]
fn near_valid_polls_reach_every_answer() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    let mut passed_through = false;
    for _ in 0..400 {
        let case = poll_case().new_tree(&mut runner).unwrap().current();
        if let Some(answer) = run(&case) {
            passed_through |= answer.passed_through;
            if !answer.passed_through {
                seen.insert(answer.status.as_u16());
            }
        }
    }
    assert!(passed_through);
    for status in [
        StatusCode::OK,
        StatusCode::NO_CONTENT,
        StatusCode::BAD_REQUEST,
        StatusCode::METHOD_NOT_ALLOWED,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        assert!(
            seen.contains(&status.as_u16()),
            "{status} never seen: {seen:?}"
        );
    }
}
