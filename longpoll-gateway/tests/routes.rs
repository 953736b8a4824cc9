//! The routes file (`--routes`): three backends (one behind TLS with a
//! self-signed certificate), each request landing where Pushpin would send
//! it; the file read again when it changes, held requests kept.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use http::StatusCode;
use support::named::{Named, Seen};
use support::{Conn, Gateway, Reply, verified_claims};

const SIG_KEY: &str = "sig-secret";

/// A routes file of its own for each test.
fn routes_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.routes"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(routes: &Path) -> Gateway {
    Gateway::start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--routes",
            routes.to_str().unwrap(),
        ],
        &["--sig-key", SIG_KEY, "--sig-iss", "test-gateway"],
        &[],
    )
    .await
}

/// `GET path` with this `Host` and headers, on a fresh connection.
async fn ask(gateway: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = Conn::connect(gateway.addr).await;
    conn.send_raw(head.as_bytes()).await;
    conn.response(false).await
}

async fn seen(gateway: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let reply = ask(gateway, host, path, headers).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{host}{path}: {}",
        reply.text()
    );
    Seen::of(reply.text())
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn each_request_lands_where_pushpin_would_send_it() {
    let a = Named::start("a").await;
    let b = Named::start("b").await;
    let c = Named::start_tls("c").await;
    let (a, b, c, dead) = (a.addr.port(), b.addr.port(), c.addr.port(), dead_port());
    // The more specific routes come first and last: the order of the lines
    // does not matter.
    let file = routes_file(
        "pushpin",
        &format!(
            r#"# A Pushpin routes file.
*,path_beg=/api,path_rem=4          127.0.0.1:{dead} 127.0.0.1:{b}
*                                   127.0.0.1:{a}

api.test,path_beg=/v1,replace_beg=/version1,as_host=inside.test   localhost:{c},ssl,insecure
api.test                            127.0.0.1:{b},host=b.internal
*,path_beg=/signed,sig_key=route-key,sig_iss=route-iss,header=X-Route:signed,header=X-Drop:   127.0.0.1:{a}
*,path_beg=/plain,no_grip           127.0.0.1:{a}  # GRIP instructions passed on
*,path_beg=/cors,aco                127.0.0.1:{a}
only.test,path_beg=/x               127.0.0.1:{a}
"#
        ),
    );
    let gateway = start(&file).await;

    let default = seen(&gateway, "any.test", "/hello?x=1", &[]).await;
    assert_eq!(
        (default.name.as_str(), default.path.as_str()),
        ("a", "/hello?x=1")
    );
    assert_eq!(default.headers["host"], "any.test");
    let claims = verified_claims(&default.headers["grip-sig"], SIG_KEY.as_bytes()).unwrap();
    assert_eq!(claims["iss"], "test-gateway");

    // path_rem=4 takes `/api` off; the first target is down and skipped.
    let api = seen(&gateway, "any.test", "/api/items?page=2", &[]).await;
    assert_eq!(
        (api.name.as_str(), api.path.as_str()),
        ("b", "/items?page=2")
    );

    // The host's own routes; over TLS to a self-signed backend.
    let v1 = seen(&gateway, "API.test:7999", "/v1/a", &[]).await;
    assert_eq!((v1.name.as_str(), v1.path.as_str()), ("c", "/version1/a"));
    assert_eq!(v1.headers["host"], "inside.test");
    let other = seen(&gateway, "api.test", "/other", &[]).await;
    assert_eq!((other.name.as_str(), other.path.as_str()), ("b", "/other"));
    assert_eq!(other.headers["host"], "b.internal");

    let signed = seen(&gateway, "any.test", "/signed/1", &[("x-drop", "client")]).await;
    assert_eq!(signed.name, "a");
    let claims = verified_claims(&signed.headers["grip-sig"], b"route-key").unwrap();
    assert_eq!(claims["iss"], "route-iss");
    assert_eq!(signed.headers["x-route"], "signed");
    assert!(!signed.headers.contains_key("x-drop"));

    // no_grip: no Grip-Sig, and a hold instruction is not followed.
    let plain = seen(&gateway, "any.test", "/plain/x", &[]).await;
    assert!(!plain.headers.contains_key("grip-sig"));
    let passed = ask(&gateway, "any.test", "/plain/hold", &[]).await;
    assert_eq!(passed.status, StatusCode::OK);
    assert_eq!(passed.text(), "a timed out");

    let cors = ask(
        &gateway,
        "any.test",
        "/cors/x",
        &[("origin", "https://app.test")],
    )
    .await;
    assert_eq!(
        cors.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(
        cors.header("access-control-allow-credentials"),
        Some("true")
    );
    let no_cors = ask(
        &gateway,
        "any.test",
        "/hello",
        &[("origin", "https://app.test")],
    )
    .await;
    assert_eq!(no_cors.header("access-control-allow-origin"), None);

    // only.test has a route, for /x only: no fallback to `*`.
    let none = ask(&gateway, "only.test", "/y", &[]).await;
    assert_eq!(none.status, StatusCode::BAD_GATEWAY);
    assert!(
        none.text().contains("no route for host \"only.test\""),
        "{}",
        none.text()
    );
    assert_eq!(gateway.metric("longpoll_gateway_no_route_total").await, 1);
    assert_eq!(gateway.metric("longpoll_gateway_routes").await, 8);
    let x = seen(&gateway, "only.test", "/x/1", &[]).await;
    assert_eq!(x.name, "a");
}

#[tokio::test]
async fn every_target_down_is_a_502_naming_the_route() {
    let file = routes_file(
        "down",
        &format!("* 127.0.0.1:{} 127.0.0.1:{}\n", dead_port(), dead_port()),
    );
    let gateway = start(&file).await;
    let reply = ask(&gateway, "any.test", "/", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.text().contains("line 1"), "{}", reply.text());
}

#[tokio::test]
async fn a_changed_file_is_read_again_and_held_requests_stay() {
    let a = Named::start("a").await;
    let b = Named::start("b").await;
    let file = routes_file("reload", &format!("* 127.0.0.1:{}\n", a.addr.port()));
    let gateway = start(&file).await;
    assert_eq!(seen(&gateway, "any.test", "/", &[]).await.name, "a");

    let mut held = Conn::connect(gateway.addr).await;
    held.send("GET", "/hold", &[]).await;
    gateway.holding(1).await;

    std::fs::write(&file, format!("# now b\n* 127.0.0.1:{}\n", b.addr.port())).unwrap();
    gateway
        .metric_is("longpoll_gateway_routes_reloads_total", 1)
        .await;
    assert_eq!(seen(&gateway, "any.test", "/", &[]).await.name, "b");

    // The hold made through the old routes is still there.
    let mut conn = Conn::connect(gateway.publish).await;
    conn.send_with_body(
        "POST",
        "/publish/",
        &[("content-type", "application/json")],
        br#"{"items": [{"channel": "routed", "formats": {"http-response": {"body": "news"}}}]}"#,
    )
    .await;
    assert_eq!(conn.response(false).await.status, StatusCode::OK);
    assert_eq!(held.response(false).await.text(), "news");

    // A file that does not parse leaves the routes in force.
    std::fs::write(&file, "*,proto=udp 127.0.0.1:1\n").unwrap();
    gateway
        .metric_is("longpoll_gateway_routes_reload_errors_total", 1)
        .await;
    assert_eq!(seen(&gateway, "any.test", "/", &[]).await.name, "b");
}

#[test]
fn a_file_that_does_not_parse_stops_the_start_naming_file_and_line() {
    let file = routes_file("bad", "* 127.0.0.1:1\n\n*,ssl=maybe 127.0.0.1:2\n");
    let output = Command::new(env!("CARGO_BIN_EXE_longpoll-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--routes",
        ])
        .arg(&file)
        .env_remove("LONGPOLL_GATEWAY_UPSTREAM")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3: ssl must be `yes` or `no`", file.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_self_signed_backend_is_refused_unless_insecure() {
    let c = Named::start_tls("c").await;
    let port = c.addr.port();
    let file = routes_file(
        "tls",
        &format!(
            "*,path_beg=/checked localhost:{port},ssl\n*,path_beg=/unchecked localhost:{port},ssl,insecure\n"
        ),
    );
    let gateway = start(&file).await;
    let refused = ask(&gateway, "any.test", "/checked", &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        refused.text()
    );
    assert_eq!(
        seen(&gateway, "any.test", "/unchecked", &[]).await.name,
        "c"
    );

    // --upstream https:// checks the certificate too.
    let upstream = Gateway::start(&format!("https://localhost:{port}"), &[]).await;
    assert_eq!(
        support::get(upstream.addr, "/").await.status,
        StatusCode::BAD_GATEWAY
    );
}
