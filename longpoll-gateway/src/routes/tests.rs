use std::path::Path;

use super::parse::{Section, sections};
use super::{Proto, Table};

fn section(value: &str, props: &[(&str, &str)]) -> Section {
    Section {
        value: value.into(),
        props: props
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The line cases of Pushpin's own reader test (routesfiletest.cpp), with
/// the sections Pushpin makes of them.
#[test]
fn lines_split_as_pushpin_splits_them() {
    assert_eq!(sections("apple").unwrap(), [section("apple", &[])]);
    assert_eq!(
        sections("apple banana").unwrap(),
        [section("apple", &[]), section("banana", &[])]
    );
    assert_eq!(
        sections("  apple   banana  # comment").unwrap(),
        [section("apple", &[]), section("banana", &[])]
    );
    assert_eq!(
        sections(r#"apple,organic,type=gala,from="washington, \"usa\"""#).unwrap(),
        [section(
            "apple",
            &[
                ("organic", ""),
                ("type", "gala"),
                ("from", "washington, \"usa\"")
            ]
        )]
    );
    assert_eq!(
        sections("apple,organic banana cherry,type=bing").unwrap(),
        [
            section("apple", &[("organic", "")]),
            section("banana", &[]),
            section("cherry", &[("type", "bing")])
        ]
    );
    assert_eq!(
        sections(",organic").unwrap(),
        [section("", &[("organic", "")])]
    );
    assert_eq!(
        sections("type=gala").unwrap(),
        [section("", &[("type", "gala")])]
    );
    assert!(sections(r#"apple,organic,type="gala"#).is_err());
    assert!(sections("apple,organic,").is_err());
    assert!(sections("apple,organic,=gala").is_err());
    assert!(sections(r#"a,x="\q""#).is_err());
    assert!(sections("").unwrap().is_empty());
    assert!(sections("   # only a comment").unwrap().is_empty());
}

/// Pushpin's fixture `src/proxy/routes.test`, line for line.
const PUSHPIN_ROUTES_TEST: &str = "\
*,debug origin:80
*,path_beg=/jsonp,aco,debug origin:80
*,path_beg=/jsonp-basic,aco,jsonp_mode=basic,jsonp_body=bparam,jsonp_defcb=jpcb,debug origin:80
";

#[test]
fn pushpins_fixture_loads_as_pushpin_loads_it() {
    let (table, warnings) =
        Table::parse("routes.test", Path::new("."), PUSHPIN_ROUTES_TEST).unwrap();
    assert_eq!(table.all.len(), 3);
    for route in &table.all {
        assert_eq!(route.host.as_deref(), Some(""));
        assert_eq!(route.targets.len(), 1);
        assert_eq!(route.targets[0].connect_host, "origin");
        assert_eq!(route.targets[0].port, 80);
        assert!(!route.targets[0].ssl);
    }
    assert!(!table.all[0].aco && table.all[1].aco && table.all[2].aco);
    assert_eq!(table.all[1].path_beg, "/jsonp");
    assert_eq!(table.all[0].id, "*,*,*,*");
    assert_eq!(table.all[2].id, "*,*,*,/jsonp-basic");
    // debug and the jsonp options are Pushpin's own: named, ignored.
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("routes.test:3:") && w.contains("jsonp_mode"))
    );
    let find = |path| {
        table
            .find("any.host", Proto::Http, false, path)
            .unwrap()
            .line
    };
    assert_eq!(find("/"), 1);
    assert_eq!(find("/jsonp/x"), 2);
    assert_eq!(find("/jsonp-basic?cb=1"), 3);
}

const ROUTES: &str = r#"
# Blank lines and comments are fine.
*                                 127.0.0.1:1  # the default
*,path_beg=/api                   127.0.0.1:2 127.0.0.1:3
*,path_beg=/api/v2,proto=http     127.0.0.1:4
*,proto=ws                        127.0.0.1:5,over_http
*,ssl=yes                         127.0.0.1:6,ssl,insecure,host=inner.test:8443
example.com,path_beg=/x,replace_beg=/y,as_host=other.test,sig_key=base64:c2VjcmV0,sig_iss=me,no_grip,header=X-A:1,header="X-B: two",header=X-C:  127.0.0.1:7
example.com,path_rem=4,id=mine    [::1]:8
"#;

#[test]
fn the_most_specific_route_wins_whatever_the_order() {
    let (table, warnings) = Table::parse("routes", Path::new("."), ROUTES).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let line = |host, proto, ssl, path| table.find(host, proto, ssl, path).map(|r| r.line);
    assert_eq!(line("a.test", Proto::Http, false, "/"), Some(3));
    assert_eq!(line("a.test", Proto::Http, false, "/api/x"), Some(4));
    assert_eq!(line("a.test", Proto::Http, false, "/api/v2/x"), Some(5));
    // A proto= route beats a longer path_beg without one.
    assert_eq!(line("a.test", Proto::Ws, false, "/api/v2/x"), Some(6));
    assert_eq!(line("a.test", Proto::Ws, true, "/"), Some(6));
    assert_eq!(line("a.test", Proto::Http, true, "/"), Some(7));
    // The longer prefix beats ssl=.
    assert_eq!(line("a.test", Proto::Http, true, "/api"), Some(4));
    // A host with routes of its own never falls back to `*` (as in Pushpin).
    assert_eq!(line("example.com", Proto::Http, false, "/x1"), Some(8));
    assert_eq!(line("example.com", Proto::Http, false, "/z"), Some(9));
    let table2 = Table::parse(
        "r",
        Path::new("."),
        "h.test,path_beg=/only 127.0.0.1:1\n* 127.0.0.1:2",
    )
    .unwrap()
    .0;
    assert!(
        table2
            .find("h.test", Proto::Http, false, "/other")
            .is_none()
    );
    assert!(
        table2
            .find("x.test", Proto::Http, false, "/other")
            .is_some()
    );
    assert!(
        Table::default()
            .find("a", Proto::Http, false, "/")
            .is_none()
    );
}

#[test]
fn options_and_targets_are_read() {
    let (table, _) = Table::parse("routes", Path::new("."), ROUTES).unwrap();
    let api = &table.all[1];
    assert_eq!(api.targets.len(), 2);
    assert_eq!(api.targets[1].to_string(), "http://127.0.0.1:3");
    let ws = &table.all[3];
    assert!(ws.targets[0].over_http);
    let tls = &table.all[4].targets[0];
    assert!(tls.ssl && tls.insecure);
    assert_eq!(tls.host.as_deref(), Some("inner.test:8443"));
    assert_eq!(tls.url("/a?b").unwrap(), "https://127.0.0.1:6/a?b");

    let x = &table.all[5];
    assert_eq!(x.host.as_deref(), Some("example.com"));
    assert_eq!(x.as_host.as_deref(), Some("other.test"));
    assert_eq!(x.sig_key.as_deref(), Some(&b"secret"[..]));
    assert_eq!(x.sig_iss.as_deref(), Some("me"));
    assert!(!x.grip);
    assert_eq!(x.rewrite("/x/1?q=2"), "/y/1?q=2");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-c", "client".parse().unwrap());
    headers.insert("x-a", "client".parse().unwrap());
    x.set_headers(&mut headers);
    assert_eq!(headers["x-a"], "1");
    assert_eq!(headers["x-b"], "two");
    assert!(!headers.contains_key("x-c"));

    let rem = &table.all[6];
    assert_eq!(rem.id, "mine");
    assert_eq!(rem.rewrite("/abcdef?x"), "/def?x");
    assert_eq!(rem.rewrite("/ab"), "/");
    assert_eq!(rem.targets[0].url("/").unwrap(), "http://[::1]:8/");
}

#[test]
fn errors_name_the_line_and_what_is_wrong() {
    let err = |text: &str| {
        Table::parse("f.routes", Path::new("."), text)
            .unwrap_err()
            .0
    };
    assert_eq!(
        err("* 127.0.0.1:1\n*,proto=udp 127.0.0.1:1"),
        "f.routes:2: proto must be `http` or `ws`, not \"udp\""
    );
    assert!(err("*").starts_with("f.routes:1: a route needs a condition and at least one target"));
    assert!(err("* nohost").contains("expected host:port"));
    assert!(err("* h:0").contains("invalid port"));
    assert!(err("* h:99999").contains("invalid port"));
    assert!(err("*,ssl=maybe h:1").contains("ssl must be"));
    assert!(err("*,path_beg= h:1").contains("path_beg cannot be empty"));
    assert!(err("*,path_rem=x h:1").contains("path_rem"));
    assert!(err("*,header=nocolon h:1").contains("header must be"));
    assert!(err("* test").contains("not supported"));
    assert!(err("*,x=\"open h:1").contains("f.routes:1: unterminated quoted section"));
    // Every bad line is named, not only the first.
    assert_eq!(err("*,ssl=1 h:1\n\n*,proto=2 h:1").lines().count(), 2);
}

#[test]
fn duplicates_and_hostless_routes_are_skipped_with_a_warning() {
    let (table, warnings) = Table::parse(
        "r",
        Path::new("."),
        "* 127.0.0.1:1\n* 127.0.0.1:2\nid=only 127.0.0.1:3\n*,wat=1 127.0.0.1:4,frob\n",
    )
    .unwrap();
    assert_eq!(table.all.len(), 1);
    assert_eq!(table.all[0].targets[0].port, 1);
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    assert!(warnings[0].starts_with("r:2:"));
    assert!(warnings[1].starts_with("r:3:"));
}
