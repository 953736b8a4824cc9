//! Access: with the client id taken from a verified token (examples/auth.rs),
//! a client gets its own events and nobody else's, and every forged,
//! tampered, expired or missing token is refused. The demo's publish
//! endpoint needs its token when one is set.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::StatusCode;
use sha2::Sha256;
use support::example::Example;
use support::{Conn, Reply, request};

const SECRET: &str = "the-service-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn encode(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// An HS256 JWT with these claims, signed with `key`.
fn token(claims: serde_json::Value, key: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        encode(&serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        encode(&claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn for_user(user: &str) -> String {
    token(serde_json::json!({"sub": user, "exp": now() + 600}), SECRET)
}

async fn poll_with(addr: std::net::SocketAddr, token: &str) -> Reply {
    request(
        addr,
        "GET",
        "/events?timeout=0&since=0",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

async fn publish(addr: std::net::SocketAddr, user: &str, body: &str) -> StatusCode {
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        &format!("/publish/{user}"),
        &[("authorization", &format!("Bearer {SECRET}"))],
        body.as_bytes(),
    )
    .await;
    conn.response(false).await.status
}

#[tokio::test]
async fn a_client_polls_its_own_events_and_forged_ids_are_refused() {
    let example = Example::start("auth", &["--secret", SECRET]).await;
    let addr = example.addr;
    assert_eq!(
        publish(addr, "alice", "for alice").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(publish(addr, "bob", "for bob").await, StatusCode::ACCEPTED);

    let alice = poll_with(addr, &for_user("alice")).await;
    assert_eq!((alice.status, alice.text()), (StatusCode::OK, "for alice"));
    let bob = poll_with(addr, &for_user("bob")).await;
    assert_eq!((bob.status, bob.text()), (StatusCode::OK, "for bob"));

    // Alice's token with the subject changed to bob: the signature no longer verifies.
    let genuine = for_user("alice");
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let forged_claims = encode(&serde_json::json!({"sub": "bob", "exp": now() + 600}));
    parts[1] = &forged_claims;
    let tampered = parts.join(".");
    let forged_key = token(
        serde_json::json!({"sub": "bob", "exp": now() + 600}),
        "a-guessed-key",
    );
    let expired = token(serde_json::json!({"sub": "bob", "exp": now() - 1}), SECRET);
    let no_subject = token(serde_json::json!({"exp": now() + 600}), SECRET);
    let unsigned = format!(
        "{}.{}.",
        encode(&serde_json::json!({"alg": "none"})),
        encode(&serde_json::json!({"sub": "bob", "exp": now() + 600}))
    );
    for (what, token, says) in [
        ("tampered", tampered.as_str(), "does not verify"),
        (
            "signed with another key",
            forged_key.as_str(),
            "does not verify",
        ),
        ("expired", expired.as_str(), "expired"),
        ("without subject", no_subject.as_str(), "no sub"),
        ("alg none", unsigned.as_str(), "HS256"),
        ("garbage", "not-a-token", "not a JWT"),
    ] {
        let reply = poll_with(addr, token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text()
        );
        assert!(reply.text().contains(says), "{what}: {}", reply.text());
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let anonymous = request(addr, "GET", "/events?timeout=0", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Publishing needs the service's secret.
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        "/publish/alice",
        &[("authorization", "Bearer guess")],
        b"x",
    )
    .await;
    assert_eq!(conn.response(false).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(example.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn the_demo_publish_endpoint_needs_its_token_when_set() {
    let demo = Example::start("demo", &["--publish-token", "pub-secret"]).await;
    let addr = demo.addr;
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer pub-secre"),
        Some("pub-secret"),
    ] {
        let mut conn = Conn::connect(addr).await;
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("authorization", *value))
            .collect();
        conn.send_with_body("POST", "/publish/alice", &headers, b"x")
            .await;
        let reply = conn.response(false).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let mut conn = Conn::connect(addr).await;
    conn.send_with_body(
        "POST",
        "/publish/alice",
        &[("authorization", "Bearer pub-secret")],
        b"ok",
    )
    .await;
    assert_eq!(conn.response(false).await.status, StatusCode::ACCEPTED);
    let reply = request(addr, "GET", "/poll/alice?since=0", &[]).await;
    assert_eq!(reply.text(), "ok");
    assert_eq!(demo.terminate().await.code(), Some(0));
}
